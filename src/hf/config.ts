// Reads a Hugging Face `config.json` of a supported decoder family into one normalized ModelConfig:
// every field that changes the math, with HF's defaults applied and inconsistencies reported together.
import { z } from "zod";
import { TunaError } from "../util/errors.ts";
import { MODEL_FAMILIES, SUPPORTED_MODEL_TYPES, type FamilySpec, type ModelFamily } from "./families.ts";
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
  hiddenAct: "silu";
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
  /** RMSNorm of each query and key head before RoPE (Qwen3's q_norm / k_norm). */
  qkNorm: boolean;
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
    throw new TunaError(
      "MODEL_UNSUPPORTED",
      `${where}: model_type "${modelType}" is not supported by tuna; supported: ${SUPPORTED_MODEL_TYPES.join(", ")}.`,
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
  const act = raw.hidden_act ?? "silu";
  if (act !== "silu") problems.push(`hidden_act "${act}" is not supported (tuna implements silu / SwiGLU)`);
  if (raw.partial_rotary_factor != null && raw.partial_rotary_factor !== 1) {
    problems.push(`partial_rotary_factor ${raw.partial_rotary_factor} is not supported (only 1.0)`);
  }

  // transformers v5 may move rope_theta / rope_scaling into rope_parameters; accept both forms.
  const ropeParams = raw.rope_parameters ?? undefined;
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
    hiddenAct: "silu",
    maxPositionEmbeddings: raw.max_position_embeddings ?? spec.defaults.maxPositionEmbeddings,
    rmsNormEps: raw.rms_norm_eps ?? spec.defaults.rmsNormEps,
    ropeTheta,
    ropeScaling: typeof rope === "string" ? { type: "default" } : rope,
    tieWordEmbeddings: raw.tie_word_embeddings ?? spec.defaults.tieWordEmbeddings,
    qkvBias: spec.qkvBiasAlways || attentionBias,
    oBias: !spec.qkvBiasAlways && attentionBias,
    mlpBias: raw.mlp_bias ?? false,
    qkNorm: spec.qkNorm,
    slidingWindow: layerWindows.some((w) => w !== null) ? (useSliding ? window : null) : null,
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
