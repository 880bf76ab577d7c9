// The registry of supported decoder families: model_type -> what differs between them (biases,
// HF config defaults). A literal map, per STYLE.md; adding a family starts here.

export type ModelFamily = "llama" | "mistral" | "qwen2";

export interface FamilySpec {
  family: ModelFamily;
  architecture: string;
  /** Qwen2 has q/k/v biases with no config flag; Llama/Mistral only via attention_bias. */
  qkvBiasAlways: boolean;
  /** Defaults of the transformers config class, used when config.json omits a field. */
  defaults: {
    rmsNormEps: number;
    ropeTheta: number;
    maxPositionEmbeddings: number;
    tieWordEmbeddings: boolean;
    /** sliding_window when the key is absent (Mistral's class default); null = no window. */
    slidingWindow: number | null;
  };
}

export const MODEL_FAMILIES: Readonly<Record<string, FamilySpec | undefined>> = {
  llama: {
    family: "llama",
    architecture: "LlamaForCausalLM",
    qkvBiasAlways: false,
    defaults: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 2048, tieWordEmbeddings: false, slidingWindow: null },
  },
  mistral: {
    family: "mistral",
    architecture: "MistralForCausalLM",
    qkvBiasAlways: false,
    defaults: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 4096 * 32, tieWordEmbeddings: false, slidingWindow: 4096 },
  },
  qwen2: {
    family: "qwen2",
    architecture: "Qwen2ForCausalLM",
    qkvBiasAlways: true,
    defaults: { rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 32768, tieWordEmbeddings: false, slidingWindow: null },
  },
};

export const SUPPORTED_MODEL_TYPES: readonly string[] = Object.keys(MODEL_FAMILIES);
