// The registry of supported decoder families: model_type -> what differs between them (biases,
// HF config defaults). A literal map, per STYLE.md; adding a family starts here, and its decoder block is
// registered in src/model/causal-lm/blocks.ts (FAMILY_BLOCKS).

export type ModelFamily = "llama" | "mistral" | "qwen2" | "qwen3" | "gemma2" | "gemma3" | "phi3";

export interface FamilySpec {
  family: ModelFamily;
  architecture: string;
  /** Qwen2 has q/k/v biases with no config flag; Llama/Mistral only via attention_bias. */
  qkvBiasAlways: boolean;
  /** RMSNorm of each query and key head before RoPE (Qwen3's q_norm / k_norm, weight of head_dim). */
  qkNorm: boolean;
  /** Phi-3's fused qkv_proj and gate_up_proj (src/hf/weights.ts linearModules). */
  fusedProjections: boolean;
  /**
   * Where sliding windows apply without layer_types: "every-layer" whenever sliding_window is set (Mistral);
   * "from-max-window-layers" only with use_sliding_window, from layer max_window_layers on (Qwen2, Qwen3).
   */
  windows: "every-layer" | "from-max-window-layers" | "gemma2-alternating" | "gemma3-pattern";
  /**
   * Gemma's differences from the Llama block, when the family has them: RMSNorm applied as (1 + weight),
   * embeddings scaled by sqrt(hidden_size), norms after attention and after the MLP too ("sandwich"), the
   * attention scale from query_pre_attn_scalar, soft-capping of scores and logits from the config, and
   * (Gemma 3) a separate RoPE base for the sliding layers.
   */
  gemma: { softcaps: boolean; localRope: boolean } | null;
  /** Defaults of the transformers config class, used when config.json omits a field. */
  defaults: {
    rmsNormEps: number;
    ropeTheta: number;
    maxPositionEmbeddings: number;
    tieWordEmbeddings: boolean;
    /** sliding_window when the key is absent (Mistral's class default); null = no window. */
    slidingWindow: number | null;
    /** head_dim when config.json omits it: the class default (Qwen3: 128), else hidden_size / heads. */
    headDim?: number;
    /** Gemma 2's attn_logit_softcapping / final_logit_softcapping when config.json omits them (null there: none). */
    softcaps?: { attn: number; final: number };
  };
}

export const MODEL_FAMILIES: Readonly<Record<string, FamilySpec | undefined>> = {
  llama: {
    family: "llama",
    architecture: "LlamaForCausalLM",
    qkvBiasAlways: false,
    fusedProjections: false,
    qkNorm: false,
    windows: "every-layer",
    gemma: null,
    defaults: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 2048, tieWordEmbeddings: false, slidingWindow: null },
  },
  mistral: {
    family: "mistral",
    architecture: "MistralForCausalLM",
    qkvBiasAlways: false,
    fusedProjections: false,
    qkNorm: false,
    windows: "every-layer",
    gemma: null,
    defaults: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 4096 * 32, tieWordEmbeddings: false, slidingWindow: 4096 },
  },
  qwen2: {
    family: "qwen2",
    architecture: "Qwen2ForCausalLM",
    qkvBiasAlways: true,
    fusedProjections: false,
    qkNorm: false,
    windows: "from-max-window-layers",
    gemma: null,
    defaults: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 32768, tieWordEmbeddings: false, slidingWindow: null },
  },
  // Qwen3 (dense): Qwen2's layout without the q/k/v biases (attention_bias, default false), with q_norm / k_norm.
  qwen3: {
    family: "qwen3",
    architecture: "Qwen3ForCausalLM",
    qkvBiasAlways: false,
    fusedProjections: false,
    qkNorm: true,
    windows: "from-max-window-layers",
    gemma: null,
    defaults: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 32768, tieWordEmbeddings: false, slidingWindow: null, headDim: 128 },
  },
  // Gemma 2: sliding and global layers alternating (even layers slide), scores and logits soft-capped.
  gemma2: {
    family: "gemma2",
    architecture: "Gemma2ForCausalLM",
    qkvBiasAlways: false,
    fusedProjections: false,
    qkNorm: false,
    windows: "gemma2-alternating",
    gemma: { softcaps: true, localRope: false },
    defaults: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 8192, tieWordEmbeddings: true, slidingWindow: 4096, headDim: 256, softcaps: { attn: 50, final: 30 } },
  },
  // Gemma 3 (text; model_type gemma3_text): q/k norms, every sixth layer global, a local RoPE base for the others.
  gemma3_text: {
    family: "gemma3",
    architecture: "Gemma3ForCausalLM",
    qkvBiasAlways: false,
    fusedProjections: false,
    qkNorm: true,
    windows: "gemma3-pattern",
    gemma: { softcaps: true, localRope: true },
    defaults: { rmsNormEps: 1e-6, ropeTheta: 1000000, maxPositionEmbeddings: 131072, tieWordEmbeddings: true, slidingWindow: 4096, headDim: 256 },
  },
  // Phi-3 / Phi-4 (model_type phi3): the Llama block with q/k/v and gate/up each stored as one fused linear.
  phi3: {
    family: "phi3",
    architecture: "Phi3ForCausalLM",
    qkvBiasAlways: false,
    fusedProjections: true,
    qkNorm: false,
    windows: "every-layer",
    gemma: null,
    defaults: { rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 4096, tieWordEmbeddings: false, slidingWindow: null },
  },
};

/**
 * What is missing for model types people try that tuna does not load yet, so the refusal says why and what to use
 * (mixture-of-experts layers, multimodal wrappers, other attention kinds).
 */
export const KNOWN_UNSUPPORTED: Readonly<Record<string, string | undefined>> = {
  mixtral: "mixture-of-experts MLP layers are not implemented",
  qwen2_moe: "mixture-of-experts MLP layers are not implemented",
  qwen3_moe: "mixture-of-experts MLP layers are not implemented",
  phimoe: "mixture-of-experts MLP layers are not implemented",
  deepseek_v2: "mixture-of-experts layers and multi-head latent attention are not implemented",
  deepseek_v3: "mixture-of-experts layers and multi-head latent attention are not implemented",
  llama4: "Llama 4 is multimodal with mixture-of-experts layers and chunked attention, none implemented",
  gemma3: "this is the multimodal Gemma 3 (Gemma3ForConditionalGeneration); its text model (model_type gemma3_text, e.g. google/gemma-3-1b-pt) is supported",
  gemma: "Gemma 1 (exact GELU) is not implemented; Gemma 2 (gemma2) and Gemma 3 text (gemma3_text) are",
  qwen2_vl: "vision-language models are not implemented; the text-only Qwen2/Qwen3 models are supported",
  mllama: "vision-language models are not implemented",
  phi: "Phi-1/Phi-2 (parallel attention and MLP, partial rotary) are not implemented; Phi-3/Phi-4 (phi3) are",
  phi3small: "Phi-3-small's block-sparse attention is not implemented",
  gpt2: "GPT-2's Conv1D layers and learned positions are not implemented",
  falcon: "Falcon's parallel attention layers are not implemented",
};

export const SUPPORTED_MODEL_TYPES: readonly string[] = Object.keys(MODEL_FAMILIES);
