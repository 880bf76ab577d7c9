// A Hugging Face decoder as llama.cpp's GGUF architectures describe it (what conversion/llama.py and
// qwen.py in llama.cpp's converter write): the architecture name, its hyperparameter keys, and each tensor's
// GGUF name, ggml shape and row order (Llama's q/k rows permuted from HF's rotate-half RoPE layout to
// llama.cpp's interleaved one).
import { TunaError } from "../util/errors.ts";
import { gguf, type GgufValue } from "../io/gguf/format.ts";
import type { ModelConfig } from "./config.ts";
import type { ExpectedWeight } from "./weights.ts";

export type GgufArchName = "llama" | "qwen2" | "qwen3" | "gemma2" | "gemma3" | "phi3";

/** HF model_type -> GGUF architecture. Mistral is "llama" in GGUF, as llama.cpp's converter writes it. */
const ARCHS: Record<string, GgufArchName | undefined> = { llama: "llama", mistral: "llama", qwen2: "qwen2", qwen3: "qwen3", gemma2: "gemma2", gemma3_text: "gemma3", phi3: "phi3" };

export function ggufArchOf(cfg: ModelConfig): GgufArchName {
  const arch = ARCHS[cfg.modelType];
  if (arch === undefined) {
    throw new TunaError(
      "UNSUPPORTED",
      `GGUF export of ${cfg.modelType} models is not available yet (supported: ${Object.keys(ARCHS).join(", ")}); ` +
        `merge the adapter with \`tuna merge\` and convert the folder with llama.cpp's convert_hf_to_gguf.py meanwhile.`,
    );
  }
  if (isGemma(arch)) {
    if (!cfg.tieWordEmbeddings) {
      throw new TunaError("UNSUPPORTED", `this ${cfg.modelType} model has its own lm_head (tie_word_embeddings false); llama.cpp's ${arch} always reuses the input embedding, so GGUF export stops here.`);
    }
    // llama.cpp does not read query_pre_attn_scalar: it scales queries by 1/sqrt(hidden/heads) for the 27B
    // shapes (46 / 62 layers) and by 1/sqrt(head_dim) otherwise, which the published checkpoints agree with.
    const big = cfg.numLayers === (arch === "gemma2" ? 46 : 62);
    const assumed = 1 / Math.sqrt(big ? cfg.hiddenSize / cfg.numHeads : cfg.headDim);
    if (Math.abs(assumed - cfg.attentionScale) > 1e-6 * assumed) {
      throw new TunaError(
        "UNSUPPORTED",
        `this ${cfg.modelType} model scales attention by ${cfg.attentionScale} (query_pre_attn_scalar), but llama.cpp assumes ${assumed} for a ${cfg.numLayers}-layer ${arch} ` +
          `and would compute another model; GGUF export stops here.`,
      );
    }
  }
  return arch;
}

function isGemma(arch: GgufArchName): boolean {
  return arch === "gemma2" || arch === "gemma3";
}

/** HF layer-module names -> GGUF tensor names (gguf-py's tensor_mapping for these architectures). */
const LAYER_NAMES: Record<string, string> = {
  input_layernorm: "attn_norm",
  "self_attn.qkv_proj": "attn_qkv",
  "mlp.gate_up_proj": "ffn_up",
  pre_feedforward_layernorm: "ffn_norm",
  post_feedforward_layernorm: "post_ffw_norm",
  "self_attn.q_proj": "attn_q",
  "self_attn.k_proj": "attn_k",
  "self_attn.v_proj": "attn_v",
  "self_attn.o_proj": "attn_output",
  "self_attn.q_norm": "attn_q_norm",
  "self_attn.k_norm": "attn_k_norm",
  post_attention_layernorm: "ffn_norm",
  "mlp.gate_proj": "ffn_gate",
  "mlp.up_proj": "ffn_up",
  "mlp.down_proj": "ffn_down",
};

/** The GGUF name of an HF tensor in `arch` (Gemma's post_attention_layernorm is the attention output's norm). */
export function ggufTensorName(hfName: string, arch: GgufArchName): string {
  if (hfName === "model.embed_tokens.weight") return "token_embd.weight";
  if (hfName === "model.norm.weight") return "output_norm.weight";
  if (hfName === "lm_head.weight") return "output.weight";
  const m = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(hfName);
  const mapped = m === null ? undefined : isGemma(arch) && m[2] === "post_attention_layernorm" ? "post_attention_norm" : LAYER_NAMES[m[2]!];
  if (m === null || mapped === undefined) throw new TunaError("INTERNAL", `no GGUF name for the tensor ${hfName}`);
  return `blk.${m[1]}.${mapped}.${m[3]}`;
}

/**
 * Rows of an HF q/k projection (or its bias) reordered for llama.cpp's LLAMA architecture, which rotates
 * interleaved pairs: within each head, row i*2 + j of the GGUF layout is row j*(D/2) + i of HF's
 * (convert_hf_to_gguf's LlamaModel.permute); "to-hf" undoes it when a GGUF is read back.
 */
export function permuteRotaryRows(values: Float32Array, heads: number, rowLength: number, direction: "to-gguf" | "to-hf" = "to-gguf"): Float32Array {
  const D = values.length / rowLength / heads;
  const out = new Float32Array(values.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < D / 2; i++) {
      for (let j = 0; j < 2; j++) {
        const hf = (h * D + j * (D / 2) + i) * rowLength;
        const gguf = (h * D + i * 2 + j) * rowLength;
        const [from, to] = direction === "to-gguf" ? [hf, gguf] : [gguf, hf];
        out.set(values.subarray(from, from + rowLength), to);
      }
    }
  }
  return out;
}

/** The heads a q/k weight's rows are permuted by in `arch`, or null when the tensor keeps HF's row order. */
export function rotaryHeadsOf(arch: GgufArchName, cfg: ModelConfig, hfName: string): number | null {
  if (arch !== "llama") return null; // qwen2/qwen3 use llama.cpp's NEOX rotation, HF's own layout
  if (/\.self_attn\.q_proj\.(weight|bias)$/.test(hfName)) return cfg.numHeads;
  if (/\.self_attn\.k_proj\.(weight|bias)$/.test(hfName)) return cfg.numKvHeads;
  return null;
}

/**
 * A tensor's values as the GGUF stores them: Gemma's RMSNorm weights w are applied as (1 + w) by transformers
 * and stored as 1 + w for llama.cpp (its converter's norm_shift), in float32 as Gemma's norm computes it.
 */
export function ggufValues(arch: GgufArchName, hfName: string, values: Float32Array): Float32Array {
  if (!isGemma(arch) || !hfName.endsWith("norm.weight")) return values;
  return values.map((v) => v + 1);
}

/** The inverse of ggufValues: a tensor read from a GGUF file back in transformers' terms. */
export function readValues(arch: GgufArchName, hfName: string, values: Float32Array): Float32Array {
  if (!isGemma(arch) || !hfName.endsWith("norm.weight")) return values;
  return values.map((v) => v - 1);
}

/** The tensors the GGUF file holds, in HF's order, without a tied lm_head (llama.cpp reuses token_embd). */
export function exportedWeights(weights: readonly ExpectedWeight[], cfg: ModelConfig): ExpectedWeight[] {
  return weights.filter((w) => !(w.name === "lm_head.weight" && cfg.tieWordEmbeddings));
}

/** llama3 RoPE's per-frequency divisors, as llama.cpp's converter writes them into rope_freqs.weight. */
export function llama3RopeFactors(cfg: ModelConfig): Float32Array | null {
  const s = cfg.ropeScaling;
  if (s.type === "factors") return Float32Array.from(s.factors); // read from a GGUF file: written back as they came
  if (s.type !== "llama3") return null;
  const dim = cfg.headDim;
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  const f = Math.fround; // torch computes these in float32
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) {
    const freq = f(1 / f(cfg.ropeTheta ** f((2 * i) / dim)));
    const wavelen = f((2 * Math.PI) / freq);
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = s.factor;
    else {
      const smooth = f(f(f(s.originalMaxPositionEmbeddings / wavelen) - s.lowFreqFactor) / f(s.highFreqFactor - s.lowFreqFactor));
      out[i] = f(1 / f(f(f(1 - smooth) / s.factor) + smooth));
    }
  }
  return out;
}

/** The architecture's hyperparameters (`<arch>.*` keys) as llama.cpp's converter writes them. */
export function archMetadata(arch: GgufArchName, cfg: ModelConfig): [string, GgufValue][] {
  const k = (key: string): string => `${arch}.${key}`;
  const out: [string, GgufValue][] = [
    [k("block_count"), gguf.u32(cfg.numLayers)],
    [k("context_length"), gguf.u32(cfg.maxPositionEmbeddings)],
    [k("embedding_length"), gguf.u32(cfg.hiddenSize)],
    [k("feed_forward_length"), gguf.u32(cfg.intermediateSize)],
    [k("attention.head_count"), gguf.u32(cfg.numHeads)],
    [k("attention.head_count_kv"), gguf.u32(cfg.numKvHeads)],
    [k("rope.freq_base"), gguf.f32(cfg.ropeTheta)],
    [k("attention.layer_norm_rms_epsilon"), gguf.f32(cfg.rmsNormEps)],
  ];
  const s = cfg.ropeScaling;
  if (s.type === "linear") out.push([k("rope.scaling.type"), gguf.str("linear")], [k("rope.scaling.factor"), gguf.f32(s.factor)]);
  // head_dim is written whenever it differs from hidden / heads (llama.cpp derives it otherwise).
  if (cfg.headDim !== cfg.hiddenSize / cfg.numHeads) out.push([k("attention.key_length"), gguf.u32(cfg.headDim)], [k("attention.value_length"), gguf.u32(cfg.headDim)]);
  if (arch === "llama") out.push([k("vocab_size"), gguf.u32(cfg.vocabSize)], [k("rope.dimension_count"), gguf.u32(cfg.headDim)]);
  if (arch === "phi3") out.push([k("rope.dimension_count"), gguf.u32(cfg.headDim)]);
  if (isGemma(arch)) {
    // The converter writes head_dim for Gemma always (above only when it differs from hidden / heads).
    if (cfg.headDim === cfg.hiddenSize / cfg.numHeads) out.push([k("attention.key_length"), gguf.u32(cfg.headDim)], [k("attention.value_length"), gguf.u32(cfg.headDim)]);
    if (cfg.attnSoftcap !== null) out.push([k("attn_logit_softcapping"), gguf.f32(cfg.attnSoftcap)]);
    if (cfg.finalSoftcap !== null) out.push([k("final_logit_softcapping"), gguf.f32(cfg.finalSoftcap)]);
    if (cfg.localRopeTheta !== null) out.push([k("rope.freq_base_swa"), gguf.f32(cfg.localRopeTheta)]);
  }
  if (cfg.slidingWindow !== null && arch !== "llama") {
    // Which layers slide, layer by layer (llama.cpp reads a bool array here as well as a period).
    out.push([k("attention.sliding_window"), gguf.u32(cfg.slidingWindow)], [k("attention.sliding_window_pattern"), { kind: "array", itemKind: "bool", values: cfg.layerWindows.map((w) => w !== null) }]);
  }
  return out;
}
