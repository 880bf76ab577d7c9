// Reads a Hugging Face `config.json` of a supported decoder family into one normalized ModelConfig:
// every field that changes the math, with HF's defaults applied and inconsistencies reported together.
import { z } from "zod";
import { TunaError } from "../util/errors.ts";
import { MODEL_FAMILIES, SUPPORTED_MODEL_TYPES, type FamilySpec, type ModelFamily, KNOWN_UNSUPPORTED } from "./families.ts";
import { parseRopeScaling, type RopeScaling } from "./rope-config.ts";

export interface BnbQuantizationConfig {
  quantMethod: "bitsandbytes";
  loadIn4bit: boolean;
  loadIn8bit: boolean;
  quantType: "nf4" | "fp4";
  useDoubleQuant: boolean;
  computeDtype: string | undefined;
  quantStorage: string | undefined;
  /** Modules bnb left unquantized (llm_int8_skip_modules), when the checkpoint says. */
  skipModules: string[];
}

/** The normalized model description every later stage reads (dimension letters as in STYLE.md). */
export interface ModelConfig {
  family: ModelFamily;
  modelType: string;
  architecture: string;
  vocabSize: number; // V
  hiddenSize: number; // C
  intermediateSize: number; // F
  numLayers: number; // L
  numHeads: number; // H
  numKvHeads: number; // KV
  headDim: number; // D
  /** The gated MLP's activation: silu (SwiGLU) or tanh GELU (Gemma's gelu_pytorch_tanh, GeGLU). */
  hiddenAct: "silu" | "gelu_tanh";
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  tieWordEmbeddings: boolean;
  /** Bias on q_proj, k_proj, v_proj (Qwen2 always; Llama when attention_bias). */
  qkvBias: boolean;
  /** Bias on o_proj (Llama's attention_bias puts it on all four projections). */
  oBias: boolean;
  /** Bias on gate/up/down (Llama's mlp_bias). */
  mlpBias: boolean;
  /** RMSNorm of each query and key head before RoPE (Qwen3's and Gemma 3's q_norm / k_norm). */
  qkNorm: boolean;
  /** Phi-3: q/k/v stored as one qkv_proj and gate/up as one gate_up_proj (PEFT adapts the fused modules). */
  fusedProjections: boolean;
  /** Gemma: every RMSNorm weight w is applied as (1 + w). */
  normPlusOne: boolean;
  /** Gemma: embeddings multiplied by sqrt(hidden_size) (rounded to the activations' dtype, as HF does). */
  embedScale: boolean;
  /** Gemma 2/3: RMSNorm on the attention output and on the MLP output before each residual add. */
  sandwichNorms: boolean;
  /** The attention scale: 1 / sqrt(head_dim), or Gemma's query_pre_attn_scalar ** -0.5. */
  attentionScale: number;
  /** Gemma 2: attention scores and final logits soft-capped, cap * tanh(x / cap); null = none. */
  attnSoftcap: number | null;
  finalSoftcap: number | null;
  /** Gemma 3: the sliding layers' RoPE base (default rope, no scaling); null = every layer uses ropeTheta / ropeScaling. */
  localRopeTheta: number | null;
  /** Sliding-window attention size when any layer uses it, else null. */
  slidingWindow: number | null;
  /** Each layer's attention window (HF layer_types "sliding_attention"), or null for full causal attention. */
  layerWindows: (number | null)[];
  bosTokenId: number | undefined;
  eosTokenIds: number[];
  padTokenId: number | undefined;
  /** Storage dtype of the checkpoint (`torch_dtype`, newer `dtype`), e.g. "bfloat16". */
  torchDtype: string | undefined;
  quantization: BnbQuantizationConfig | null;
}

const positiveInt = z.number().int().positive();
const tokenId = z.number().int().nonnegative().nullish();

// Only the fields tuna reads; HF configs carry many more (kept by looseObject, then ignored).
const rawConfigSchema = z.looseObject({
  model_type: z.string(),
  architectures: z.array(z.string()).nullish(),
  vocab_size: positiveInt,
  hidden_size: positiveInt,
  intermediate_size: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
  num_key_value_heads: positiveInt.nullish(),
  head_dim: positiveInt.nullish(),
  hidden_act: z.string().nullish(),
  hidden_activation: z.string().nullish(),
  query_pre_attn_scalar: z.number().positive().nullish(),
  attn_logit_softcapping: z.number().positive().nullish(),
  final_logit_softcapping: z.number().positive().nullish(),
  rope_local_base_freq: z.number().positive().nullish(),
  sliding_window_pattern: positiveInt.nullish(),
  max_position_embeddings: positiveInt.nullish(),
  rms_norm_eps: z.number().positive().nullish(),
  rope_theta: z.number().positive().nullish(),
  rope_scaling: z.record(z.string(), z.unknown()).nullish(),
  rope_parameters: z.record(z.string(), z.unknown()).nullish(),
  partial_rotary_factor: z.number().nullish(),
  tie_word_embeddings: z.boolean().nullish(),
  attention_bias: z.boolean().nullish(),
  mlp_bias: z.boolean().nullish(),
  sliding_window: positiveInt.nullish(),
  use_sliding_window: z.boolean().nullish(),
  max_window_layers: z.number().int().nonnegative().nullish(),
  layer_types: z.array(z.string()).nullish(),
  bos_token_id: tokenId,
  eos_token_id: z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullish(),
  pad_token_id: tokenId,
  torch_dtype: z.string().nullish(),
  dtype: z.string().nullish(),
  quantization_config: z.record(z.string(), z.unknown()).nullish(),
});

type RawConfig = z.infer<typeof rawConfigSchema>;

/** Parses config.json content (already JSON-decoded); `where` names the file in messages. */
export function parseModelConfig(json: unknown, where: string): ModelConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new TunaError("MODEL_INVALID", `${where}: expected a JSON object, got ${Array.isArray(json) ? "an array" : typeof json}.`);
  }
  const modelType = (json as Record<string, unknown>)["model_type"];
  if (typeof modelType !== "string") {
    throw new TunaError("MODEL_INVALID", `${where}: no "model_type" field; this does not look like a Hugging Face model config.`);
  }
  const spec = MODEL_FAMILIES[modelType];
  if (spec === undefined) {
    const why = KNOWN_UNSUPPORTED[modelType];
    throw new TunaError(
      "MODEL_UNSUPPORTED",
      `${where}: model_type "${modelType}" is not supported by tuna${why === undefined ? "" : ` (${why})`}; supported: ${SUPPORTED_MODEL_TYPES.join(", ")}.`,
    );
  }
  const parsed = rawConfigSchema.safeParse(json);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  - ${i.path.join(".") || "(root)"}: ${i.message}`);
    throw new TunaError("MODEL_INVALID", `${where}: invalid fields:\n${lines.join("\n")}`);
  }
  return normalize(parsed.data, spec, where);
}

function normalize(raw: RawConfig, spec: FamilySpec, where: string): ModelConfig {
  const problems: string[] = [];
  const family = spec.family;
  const numHeads = raw.num_attention_heads;
  const numKvHeads = raw.num_key_value_heads ?? numHeads;
  let headDim = raw.head_dim ?? spec.defaults.headDim ?? 0;
  if (raw.head_dim == null && spec.defaults.headDim === undefined) {
    if (raw.hidden_size % numHeads !== 0) {
      problems.push(`hidden_size ${raw.hidden_size} is not divisible by num_attention_heads ${numHeads} and head_dim is not set`);
    }
    headDim = Math.floor(raw.hidden_size / numHeads);
  }
  if (numHeads % numKvHeads !== 0) {
    problems.push(`num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  }
  if (headDim % 2 !== 0) problems.push(`head_dim ${headDim} must be even for rotary embeddings`);
  const gemma = spec.gemma;
  const actName = raw.hidden_activation ?? raw.hidden_act ?? (gemma !== null ? "gelu_pytorch_tanh" : "silu");
  const hiddenAct = actName === "silu" ? "silu" : actName === "gelu_pytorch_tanh" || actName === "gelu_new" ? "gelu_tanh" : null;
  if (hiddenAct === null) problems.push(`hidden_act "${actName}" is not supported (tuna implements silu / SwiGLU and gelu_pytorch_tanh / GeGLU)`);
  if (raw.partial_rotary_factor != null && raw.partial_rotary_factor !== 1) {
    problems.push(`partial_rotary_factor ${raw.partial_rotary_factor} is not supported (only 1.0)`);
  }

  // transformers v5 may move rope_theta / rope_scaling into rope_parameters; accept both forms. Gemma 3 there
  // holds one set per layer type: the global layers' scaling, and the sliding layers' base.
  const perLayerType = raw.rope_parameters?.["full_attention"];
  const localParams = raw.rope_parameters?.["sliding_attention"];
  const ropeParams = isRecord(perLayerType) ? perLayerType : (raw.rope_parameters ?? undefined);
  let localRopeTheta: number | null = null;
  if (gemma?.localRope === true) {
    const fromParams = isRecord(localParams) ? localParams["rope_theta"] : undefined;
    if (isRecord(localParams) && (localParams["rope_type"] ?? "default") !== "default") {
      problems.push(`rope_parameters.sliding_attention.rope_type ${JSON.stringify(localParams["rope_type"])} is not supported (the sliding layers use default RoPE)`);
    }
    localRopeTheta = raw.rope_local_base_freq ?? (typeof fromParams === "number" ? fromParams : 10000);
  }
  const ropeThetaFromParams = typeof ropeParams?.["rope_theta"] === "number" ? ropeParams["rope_theta"] : undefined;
  const ropeTheta = raw.rope_theta ?? ropeThetaFromParams ?? spec.defaults.ropeTheta;
  const rope = parseRopeScaling(raw.rope_scaling ?? ropeParams ?? null);
  if (typeof rope === "string") problems.push(rope);

  let quantization: BnbQuantizationConfig | null = null;
  if (raw.quantization_config != null) {
    const q = parseQuantizationConfig(raw.quantization_config);
    if (typeof q === "string") problems.push(q);
    else quantization = q;
  }

  // Mistral applies sliding_window whenever set (absent = the class default); Qwen2/Qwen3 only with use_sliding_window.
  const window = raw.sliding_window === undefined ? spec.defaults.slidingWindow : raw.sliding_window;
  const useSliding = spec.windows === "from-max-window-layers" ? raw.use_sliding_window === true : window !== null;
  const layerWindows = parseLayerWindows(raw, spec, useSliding ? window : null, problems);
  const eos = raw.eos_token_id;
  if (problems.length > 0) {
    throw new TunaError("MODEL_INVALID", `${where}: ${problems.length} problem(s):\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
  const attentionBias = raw.attention_bias ?? false;
  return {
    family,
    modelType: raw.model_type,
    architecture: raw.architectures?.[0] ?? spec.architecture,
    vocabSize: raw.vocab_size,
    hiddenSize: raw.hidden_size,
    intermediateSize: raw.intermediate_size,
    numLayers: raw.num_hidden_layers,
    numHeads,
    numKvHeads,
    headDim,
    hiddenAct: hiddenAct ?? "silu",
    maxPositionEmbeddings: raw.max_position_embeddings ?? spec.defaults.maxPositionEmbeddings,
    rmsNormEps: raw.rms_norm_eps ?? spec.defaults.rmsNormEps,
    ropeTheta,
    ropeScaling: typeof rope === "string" ? { type: "default" } : rope,
    tieWordEmbeddings: raw.tie_word_embeddings ?? spec.defaults.tieWordEmbeddings,
    qkvBias: spec.qkvBiasAlways || attentionBias,
    oBias: !spec.qkvBiasAlways && attentionBias,
    mlpBias: raw.mlp_bias ?? false,
    qkNorm: spec.qkNorm,
    fusedProjections: spec.fusedProjections,
    normPlusOne: gemma !== null,
    embedScale: gemma !== null,
    sandwichNorms: gemma !== null,
    attentionScale: gemma !== null ? (raw.query_pre_attn_scalar ?? 256) ** -0.5 : 1 / Math.sqrt(headDim),
    // Absent keys take the class defaults (Gemma 2: 50 and 30); an explicit null means no cap.
    attnSoftcap: gemma?.softcaps === true ? (raw.attn_logit_softcapping === undefined ? (spec.defaults.softcaps?.attn ?? null) : raw.attn_logit_softcapping) : null,
    finalSoftcap: gemma?.softcaps === true ? (raw.final_logit_softcapping === undefined ? (spec.defaults.softcaps?.final ?? null) : raw.final_logit_softcapping) : null,
    localRopeTheta,
    slidingWindow: layerWindows.find((w) => w !== null) ?? null,
    layerWindows,
    bosTokenId: raw.bos_token_id ?? undefined,
    eosTokenIds: eos == null ? [] : Array.isArray(eos) ? eos : [eos],
    padTokenId: raw.pad_token_id ?? undefined,
    torchDtype: raw.torch_dtype ?? raw.dtype ?? undefined,
    quantization,
  };
}

/**
 * Each layer's window, as transformers decides it: `layer_types` when config.json has it ("sliding_attention"
 * layers get the window, "full_attention" ones none); else Qwen2/Qwen3 window the layers from max_window_layers on
 * (class default 28) and Mistral every layer. Other layer kinds (chunked, linear attention) are refused.
 */
function parseLayerWindows(raw: RawConfig, spec: FamilySpec, window: number | null, problems: string[]): (number | null)[] {
  const L = raw.num_hidden_layers;
  const types = raw.layer_types;
  if (types != null) {
    if (types.length !== L) problems.push(`layer_types has ${types.length} entries for ${L} layers`);
    const unknown = [...new Set(types.filter((t) => t !== "sliding_attention" && t !== "full_attention"))];
    if (unknown.length > 0) problems.push(`layer_types ${unknown.map((t) => JSON.stringify(t)).join(", ")} not supported (tuna implements "full_attention" and "sliding_attention")`);
    return Array.from({ length: L }, (_, l) => (types[l] === "sliding_attention" ? window : null));
  }
  if (window === null) return Array.from({ length: L }, () => null);
  // transformers' defaults: Gemma 2 slides on even layers, Gemma 3 on all but every sliding_window_pattern-th.
  if (spec.windows === "gemma2-alternating") return Array.from({ length: L }, (_, l) => (l % 2 === 0 ? window : null));
  const pattern = raw.sliding_window_pattern ?? 6;
  if (spec.windows === "gemma3-pattern") return Array.from({ length: L }, (_, l) => ((l + 1) % pattern !== 0 ? window : null));
  const first = spec.windows === "from-max-window-layers" ? (raw.max_window_layers ?? 28) : 0;
  return Array.from({ length: L }, (_, l) => (l >= first ? window : null));
}

function parseQuantizationConfig(q: Record<string, unknown>): BnbQuantizationConfig | string {
  const method = q["quant_method"];
  if (method !== "bitsandbytes") {
    return `quantization_config.quant_method "${String(method)}" is not supported (tuna reads bitsandbytes 4-bit/8-bit checkpoints)`;
  }
  // bnb serializes both the public and the underscored private flags; either may be the one present.
  const loadIn4bit = q["load_in_4bit"] === true || q["_load_in_4bit"] === true;
  const loadIn8bit = q["load_in_8bit"] === true || q["_load_in_8bit"] === true;
  if (loadIn4bit === loadIn8bit) return "quantization_config must set exactly one of load_in_4bit / load_in_8bit";
  const quantType = q["bnb_4bit_quant_type"] ?? "fp4";
  if (quantType !== "nf4" && quantType !== "fp4") return `quantization_config.bnb_4bit_quant_type ${JSON.stringify(quantType)} is not nf4 or fp4`;
  const skip = q["llm_int8_skip_modules"];
  return {
    quantMethod: "bitsandbytes",
    loadIn4bit,
    loadIn8bit,
    quantType,
    useDoubleQuant: q["bnb_4bit_use_double_quant"] === true,
    computeDtype: typeof q["bnb_4bit_compute_dtype"] === "string" ? q["bnb_4bit_compute_dtype"] : undefined,
    quantStorage: typeof q["bnb_4bit_quant_storage"] === "string" ? q["bnb_4bit_quant_storage"] : undefined,
    skipModules: Array.isArray(skip) ? skip.filter((s): s is string => typeof s === "string") : [],
  };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
