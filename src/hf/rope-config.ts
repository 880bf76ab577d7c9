// Parses `rope_scaling` (or transformers v5 `rope_parameters`) into a typed RopeScaling.
// The math that uses it lives with the RoPE op; this file only checks the fields each type needs.

export type RopeScaling =
  | { type: "default" }
  | { type: "linear"; factor: number }
  // Dynamic NTK changes nothing up to max_position_embeddings (transformers recomputes only beyond it).
  | { type: "dynamic"; factor: number }
  | { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }
  // Per-frequency divisors given as numbers (a GGUF file's rope_freqs.weight, which llama3 scaling writes);
  // never parsed from config.json.
  | { type: "factors"; factors: number[] };

const SUPPORTED = ["default", "linear", "dynamic", "llama3"];

/** Returns the scaling, or a one-line problem description. */
export function parseRopeScaling(raw: Record<string, unknown> | null): RopeScaling | string {
  if (raw === null) return { type: "default" };
  const kind = raw["rope_type"] ?? raw["type"] ?? "default";
  const num = (key: string): number | string => {
    const v = raw[key];
    return typeof v === "number" && Number.isFinite(v) && v > 0 ? v : `rope_scaling.${key} must be a positive number (got ${JSON.stringify(v)})`;
  };
  const firstProblem = (...vals: (number | string)[]): string | undefined => vals.find((v): v is string => typeof v === "string");
  switch (kind) {
    case "default":
      return { type: "default" };
    case "linear":
    case "dynamic": {
      const factor = num("factor");
      return typeof factor === "string" ? factor : { type: kind === "linear" ? "linear" : "dynamic", factor };
    }
    case "llama3": {
      const factor = num("factor");
      const low = num("low_freq_factor");
      const high = num("high_freq_factor");
      const orig = num("original_max_position_embeddings");
      const problem = firstProblem(factor, low, high, orig);
      if (problem !== undefined) return problem;
      if (low === high) return "rope_scaling: llama3 needs low_freq_factor != high_freq_factor";
      return { type: "llama3", factor: factor as number, lowFreqFactor: low as number, highFreqFactor: high as number, originalMaxPositionEmbeddings: orig as number };
    }
    default:
      return `rope_scaling type ${JSON.stringify(kind)} is not supported (supported: ${SUPPORTED.join(", ")})`;
  }
}
