// The parameters of a causal LM of any supported family on a backend: frozen base weights (dense or 4-bit), and the
// trainable ones (LoRA A/B, or every weight for full fine-tuning) as named views of the flat buffer of
// src/model/trainable.ts.
import type { Quant4bitTensors, Tensor } from "../../backend/types.ts";
import type { ModelConfig } from "../../hf/config.ts";
import type { Projection } from "../../hf/weights.ts";
import type { TrainableBuffers } from "../trainable.ts";

export interface LoraModule {
  rank: number; // R
  scale: number; // alpha / R (or alpha / sqrt(R) with rsLoRA)
  dropout: number;
  A: Tensor; // (R, in)
  B: Tensor; // (out, R)
  dA: Tensor;
  dB: Tensor;
  /** DoRA's magnitude and the row norms of the adapted weight (PEFT use_dora), or null for plain LoRA. */
  dora: DoraModule | null;
  /**
   * A part of a fused module (Phi-3's k and v of qkv_proj, up of gate_up_proj): A is shared with the first part,
   * and so is the dropped-out input — this names that part, whose forward draws the mask; null otherwise.
   */
  inputOf: Projection | null;
}

export interface DoraModule {
  /** f32 (out): lora_magnitude_vector, a view of the trainable buffer, and its gradient. */
  magnitude: Tensor;
  dMagnitude: Tensor;
  /** (out): ||W + scale * B A|| per row, computed in each forward and treated as a constant (as PEFT detaches it). */
  norms: Tensor;
}

export interface Linear {
  /** HF module name, e.g. model.layers.0.self_attn.q_proj */
  module: string;
  inFeatures: number;
  outFeatures: number;
  /** Dense weight (out, in), or null when stored 4-bit. */
  weight: Tensor | null;
  quant: Quant4bitTensors | null;
  bias: Tensor | null; // (out)
  /** Gradients exist only for trainable tensors (full fine-tuning). */
  dweight: Tensor | null;
  dbias: Tensor | null;
  lora: LoraModule | null;
  /**
   * Batched decoding of several adapters over one base (decode-batch.ts): each group of rows gets its own
   * adapter's B A on top of the base output. Absent everywhere else.
   */
  loraRows?: readonly LoraRowGroup[];
}

/** Rows first..first+count-1 of a batched step belong to a sequence (or run of sequences) with this adapter. */
export interface LoraRowGroup {
  first: number;
  count: number;
  lora: LoraModule;
}

export interface LayerParams {
  inputNorm: Tensor; // (C)
  postNorm: Tensor; // (C)
  dInputNorm: Tensor | null;
  dPostNorm: Tensor | null;
  /** Qwen3's per-head RMSNorm weights of queries and keys (D), and their gradients (full fine-tuning); null without. */
  qkNorm: { q: Tensor; k: Tensor; dq: Tensor | null; dk: Tensor | null } | null;
  /**
   * Gemma 2/3: the norms of the attention output (HF post_attention_layernorm) and of the MLP output
   * (post_feedforward_layernorm), applied before each residual add; postNorm is then pre_feedforward_layernorm.
   */
  sandwich: { attnOut: Tensor; mlpOut: Tensor; dAttnOut: Tensor | null; dMlpOut: Tensor | null } | null;
  proj: Record<Projection, Linear>;
}

export interface CausalLmParams {
  cfg: ModelConfig;
  embed: Tensor; // (V, C)
  dEmbed: Tensor | null;
  layers: LayerParams[];
  norm: Tensor; // (C)
  dNorm: Tensor | null;
  /** (V, C); the same tensor as embed when embeddings are tied. */
  lmHead: Tensor;
  dLmHead: Tensor | null;
  /** Trained replacement rows of the input embedding (PEFT trainable_token_indices), or null. */
  embedRows: TokenRows | null;
  /** Trained rows of the output embedding: embedRows itself when tied, else lm_head's own, or null. */
  lmHeadRows: TokenRows | null;
  /** (V, C) lm_head with its trained rows substituted, and a (V, C) gradient scratch; null without lmHeadRows. */
  effectiveLmHead: Tensor | null;
  lmHeadGradScratch: Tensor | null;
  trainable: TrainableBuffers;
}

/** Replacement rows for some token ids: the rows are trained, the rest of the matrix stays frozen. */
export interface TokenRows {
  indices: number[];
  /** token id -> row of `param` */
  rowOf: Map<number, number>;
  param: Tensor; // (n, C)
  grad: Tensor; // (n, C)
}
