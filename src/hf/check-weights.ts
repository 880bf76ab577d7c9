// Checks a checkpoint's tensors against the names and shapes its config implies, including the
// companion tensors of bitsandbytes 4-bit / 8-bit checkpoints; every problem is reported together.
import { TunaError } from "../util/errors.ts";
import type { WeightSource } from "../io/safetensors/checkpoint.ts";
import type { ModelConfig } from "./config.ts";
import { expectedWeights, type ExpectedWeight } from "./weights.ts";
import { numel } from "../util/shape.ts";

export interface WeightCheck {
  /** Tensors present but not used by tuna (reported, not fatal, as transformers does). */
  unexpected: string[];
  /** Stored bytes per dtype name, e.g. { BF16: 2468 }. */
  dtypeBytes: Record<string, number>;
  /** Linear weights stored bnb-quantized. */
  quantized: number;
}

// Old Llama conversions carry the rotary table; transformers ignores it and so do we.
const IGNORED = /\.rotary_emb\.inv_freq$/;

function isQuantizedIn(cfg: ModelConfig, w: ExpectedWeight): boolean {
  const q = cfg.quantization;
  if (q === null || !w.quantizable) return false;
  return !q.skipModules.some((m) => w.name.includes(m));
}

/** The extra tensors bnb stores beside a quantized `<module>.weight`. */
function companions(cfg: ModelConfig, name: string): string[] {
  const q = cfg.quantization;
  if (q === null) return [];
  if (q.loadIn8bit) return [`${name.replace(/\.weight$/, "")}.SCB`, `${name}_format`];
  const base = [`${name}.absmax`, `${name}.quant_map`, `${name}.quant_state.bitsandbytes__${q.quantType}`];
  return q.useDoubleQuant ? [...base, `${name}.nested_absmax`, `${name}.nested_quant_map`] : base;
}

export function checkWeights(cfg: ModelConfig, source: WeightSource): WeightCheck {
  const problems: string[] = [];
  const known = new Set<string>();
  let quantized = 0;
  for (const w of expectedWeights(cfg)) {
    known.add(w.name);
    if (!source.has(w.name)) {
      problems.push(`missing tensor ${w.name} (expected shape [${w.shape.join(", ")}])`);
      continue;
    }
    const info = source.info(w.name);
    if (isQuantizedIn(cfg, w)) {
      quantized++;
      // Packed 4-bit: two codes per byte in any storage dtype; 8-bit: one int8 per element.
      const bytes = cfg.quantization?.loadIn8bit === true ? numel(w.shape) : Math.ceil(numel(w.shape) / 2);
      if (info.byteLength !== bytes) {
        problems.push(`${w.name}: quantized tensor holds ${info.byteLength} bytes, expected ${bytes} for shape [${w.shape.join(", ")}]`);
      }
      for (const c of companions(cfg, w.name)) {
        known.add(c);
        if (!source.has(c)) problems.push(`missing quantization state ${c} (the checkpoint says it is bitsandbytes-quantized)`);
      }
    } else if (info.shape.join(",") !== w.shape.join(",")) {
      problems.push(`${w.name}: shape [${info.shape.join(", ")}] does not match the config's [${w.shape.join(", ")}]`);
    }
  }
  if (problems.length > 0) {
    const shown = problems.slice(0, 20);
    if (problems.length > shown.length) shown.push(`... and ${problems.length - shown.length} more`);
    throw new TunaError(
      "MODEL_INVALID",
      `the weights in ${source.dir} do not fit its config.json (${problems.length} problem(s)):\n${shown.map((p) => `  - ${p}`).join("\n")}`,
    );
  }
  const dtypeBytes: Record<string, number> = {};
  const unexpected: string[] = [];
  for (const name of source.names()) {
    const info = source.info(name);
    dtypeBytes[info.dtype] = (dtypeBytes[info.dtype] ?? 0) + info.byteLength;
    if (!known.has(name) && !IGNORED.test(name)) unexpected.push(name);
  }
  // Layers past num_hidden_layers mean config and weights disagree: training a truncated model silently
  // would be wrong (transformers only warns about the unused tensors).
  const extraLayers = [...new Set(unexpected.map((n) => /^model\.layers\.(\d+)\./.exec(n)?.[1]).filter((l) => l !== undefined).map(Number))];
  const beyond = extraLayers.filter((l) => l >= cfg.numLayers).sort((a, b) => a - b);
  if (beyond.length > 0) {
    throw new TunaError(
      "MODEL_INVALID",
      `${source.dir}: config.json says num_hidden_layers ${cfg.numLayers}, but the weights also hold layer(s) ` +
        `${beyond.slice(0, 8).join(", ")}${beyond.length > 8 ? ", ..." : ""} (e.g. ${unexpected.find((n) => n.startsWith(`model.layers.${beyond[0]}.`))}); ` +
        "the config does not describe these weights. Fix num_hidden_layers or use the matching config.json.",
    );
  }
  return { unexpected, dtypeBytes, quantized };
}

