// The model shapes the GPU benchmark runs (the peer's hf_baseline.py CFGS, plus a tiny one for CPU runs),
// their config.json objects for bf16 LoRA and for a pre-quantized bitsandbytes NF4 checkpoint, and FLOPs per token.
import { MODEL_PRESETS, type HfConfigJson } from "../../../src/hf/presets.ts";
import type { ModelConfig } from "../../../src/hf/config.ts";
import { TunaError } from "../../../src/util/errors.ts";

/** qlora: a pre-quantized NF4 checkpoint; qlora-quantize: bf16 weights quantized at load (as --use_4bit_quantization on a bf16 model); lora: bf16. */
export type BenchMode = "qlora" | "qlora-quantize" | "lora";
export const BENCH_MODES: readonly BenchMode[] = ["qlora", "qlora-quantize", "lora"];

// hf_baseline.py's CFGS, copied key for key: the peer builds LlamaConfig(**CFGS[name]), tuna gets the same
// shape laid over the matching preset (which adds the fields LlamaConfig would default).
const PEER_CFGS: Readonly<Record<string, HfConfigJson>> = {
  "llama2-7b": {
    vocab_size: 32000,
    hidden_size: 4096,
    intermediate_size: 11008,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 32,
    max_position_embeddings: 4096,
  },
  "llama3-8b": {
    vocab_size: 128256,
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    max_position_embeddings: 8192,
    rope_theta: 500000.0,
  },
};

interface BenchModel {
  preset: string;
  /** The name hf_baseline.py knows the shape by, or null when the peer has no such shape. */
  peer: string | null;
}

export const BENCH_MODELS: Readonly<Record<string, BenchModel | undefined>> = {
  "llama2-7b": { preset: "llama-2-7b", peer: "llama2-7b" },
  "llama3-8b": { preset: "llama-3-8b", peer: "llama3-8b" },
  // The newer families at published shapes (tuna only: hf_baseline.py builds Llama configs). Phi-3's fused
  // projections load from bf16 only (modes lora and qlora-quantize), not from a pre-quantized checkpoint yet.
  "qwen3-8b": { preset: "qwen3-8b", peer: null },
  "gemma2-2b": { preset: "gemma-2-2b", peer: null },
  "gemma3-1b": { preset: "gemma-3-1b", peer: null },
  "phi3-mini": { preset: "phi-3-mini-4k", peer: null },
  "phi4": { preset: "phi-4", peer: null },
  // For CPU runs and tests: 2 layers, C=64, GQA 4/2, tied embeddings, vocabulary 32000.
  tiny: { preset: "tiny-llama", peer: null },
};

export const BENCH_MODEL_NAMES: readonly string[] = Object.keys(BENCH_MODELS);

export function benchModel(name: string): BenchModel {
  const m = BENCH_MODELS[name];
  if (m === undefined) throw new TunaError("CONFIG_INVALID", `unknown benchmark model "${name}"; choose from ${BENCH_MODEL_NAMES.join(", ")}.`);
  return m;
}

/**
 * What bitsandbytes writes into config.json for load_in_4bit nf4 with double quant and bf16 compute
 * (BitsAndBytesConfig.to_dict, both the public and the underscored flags).
 */
export function bnbNf4QuantizationConfig(): HfConfigJson {
  return {
    quant_method: "bitsandbytes",
    _load_in_4bit: true,
    _load_in_8bit: false,
    load_in_4bit: true,
    load_in_8bit: false,
    bnb_4bit_quant_type: "nf4",
    bnb_4bit_use_double_quant: true,
    bnb_4bit_compute_dtype: "bfloat16",
    bnb_4bit_quant_storage: "uint8",
    llm_int8_enable_fp32_cpu_offload: false,
    llm_int8_has_fp16_weight: false,
    llm_int8_skip_modules: null,
    llm_int8_threshold: 6.0,
  };
}

/** config.json of the benchmark model: bf16 weights for "lora", a pre-quantized NF4 checkpoint for "qlora". */
export function benchConfigJson(name: string, mode: BenchMode): HfConfigJson {
  const m = benchModel(name);
  const preset = MODEL_PRESETS[m.preset];
  if (preset === undefined) throw new TunaError("INTERNAL", `benchmark model "${name}" names the missing preset "${m.preset}"`);
  const shape = m.peer === null ? {} : (PEER_CFGS[m.peer] ?? {});
  return { ...preset, ...shape, ...(mode === "qlora" ? { quantization_config: bnbNf4QuantizationConfig() } : {}) };
}

/**
 * hf_baseline.py's FLOPs per token, so both sides' TFLOP/s use one rule: 6N (forward, recompute, dX) with
 * checkpointing or 4N without, over the linear weights incl. lm_head, plus causal attention 2*T*C per layer
 * per token times 4 (with recompute) or 3. Dequantization and LoRA's small GEMMs are not counted.
 */
export function flopsPerToken(cfg: ModelConfig, seq: number, gc: boolean): number {
  const L = cfg.numLayers;
  const d = cfg.hiddenSize;
  const f = cfg.intermediateSize;
  const V = cfg.vocabSize;
  const kv = cfg.numKvHeads * (d / cfg.numHeads);
  const lin = L * (d * d + 2 * d * kv + d * d + 3 * d * f) + d * V;
  const attnFwd = 2 * seq * d * L;
  return (gc ? 6 : 4) * lin + (gc ? 4 : 3) * attnFwd;
}
