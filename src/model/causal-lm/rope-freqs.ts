// The rotary inverse frequencies as transformers computes them (modeling_rope_utils.py), in float32:
// default, linear, dynamic (unchanged up to max_position_embeddings) and llama3 scaling; and explicit
// per-frequency factors read from a GGUF file.
import type { ModelConfig } from "../../hf/config.ts";

const f = Math.fround;

/** inv_freq (D/2) in float32, exactly as torch: 1 / (theta ** (float32(2j) / D)) computed in float32. */
export function ropeInvFreq(cfg: ModelConfig): Float32Array {
  const dim = cfg.headDim;
  const half = dim / 2;
  const inv = new Float32Array(half);
  for (let j = 0; j < half; j++) {
    // torch: arange(0, dim, 2).float() / dim -> float32 exponent; base ** exponent in float32.
    const exponent = f(f(2 * j) / dim);
    inv[j] = f(1 / f(Math.pow(cfg.ropeTheta, exponent)));
  }
  const s = cfg.ropeScaling;
  switch (s.type) {
    case "default":
    case "dynamic":
      return inv;
    case "linear":
      for (let j = 0; j < half; j++) inv[j] = f(inv[j]! / s.factor);
      return inv;
    case "factors":
      // llama.cpp divides each frequency by its factor (ggml_rope_ext's freq_factors), as llama3 scaling amounts to.
      for (let j = 0; j < half; j++) inv[j] = f(inv[j]! / (s.factors[j] ?? 1));
      return inv;
    case "llama3": {
      const lowWavelen = f(s.originalMaxPositionEmbeddings / s.lowFreqFactor);
      const highWavelen = f(s.originalMaxPositionEmbeddings / s.highFreqFactor);
      for (let j = 0; j < half; j++) {
        const freq = inv[j]!;
        const wavelen = f(f(2 * Math.PI) / freq);
        let scaled = wavelen > lowWavelen ? f(freq / s.factor) : freq;
        const isMedium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
        if (isMedium) {
          const smooth = f(f(f(s.originalMaxPositionEmbeddings / wavelen) - s.lowFreqFactor) / f(s.highFreqFactor - s.lowFreqFactor));
          scaled = f(f(f(f(1 - smooth) * scaled) / s.factor) + f(smooth * scaled));
        }
        inv[j] = scaled;
      }
      return inv;
    }
  }
}
