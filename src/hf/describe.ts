// A JSON-able description of a model (config-derived facts, parameter counts, memory, stored dtypes):
// what `tuna inspect` prints as text or as --json.
import type { ModelConfig } from "./config.ts";
import { countParameters, estimateWeightMemory, type ModuleKind } from "./weights.ts";
import type { WeightCheck } from "./check-weights.ts";

export interface ModelDescription {
  architecture: string;
  modelType: string;
  layers: number;
  hiddenSize: number;
  intermediateSize: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  ropeTheta: number;
  ropeScaling: ModelConfig["ropeScaling"];
  rmsNormEps: number;
  tieWordEmbeddings: boolean;
  attentionBias: { qkv: boolean; o: boolean };
  slidingWindow: number | null;
  /** How many layers use the window. */
  slidingLayers: number;
  /** Family features beyond the Llama block, as short phrases (q/k norms, Gemma's norms and soft-caps...). */
  features: string[];
  parameters: { total: number; byKind: Partial<Record<ModuleKind, number>>; linear: number };
  memory: { bf16Bytes: number; nf4Bytes: number; nf4DoubleQuantBytes: number };
  quantization: ModelConfig["quantization"];
  stored?: { files: number; bytesByDtype: Record<string, number>; unexpectedTensors: string[]; quantizedLinear: number };
}

export function describeModel(cfg: ModelConfig, check?: WeightCheck & { files: number }): ModelDescription {
  const counts = countParameters(cfg);
  const description: ModelDescription = {
    architecture: cfg.architecture,
    modelType: cfg.modelType,
    layers: cfg.numLayers,
    hiddenSize: cfg.hiddenSize,
    intermediateSize: cfg.intermediateSize,
    heads: cfg.numHeads,
    kvHeads: cfg.numKvHeads,
    headDim: cfg.headDim,
    vocabSize: cfg.vocabSize,
    maxPositionEmbeddings: cfg.maxPositionEmbeddings,
    ropeTheta: cfg.ropeTheta,
    ropeScaling: cfg.ropeScaling,
    rmsNormEps: cfg.rmsNormEps,
    tieWordEmbeddings: cfg.tieWordEmbeddings,
    attentionBias: { qkv: cfg.qkvBias, o: cfg.oBias },
    slidingWindow: cfg.slidingWindow,
    slidingLayers: cfg.layerWindows.filter((w) => w !== null).length,
    features: familyFeatures(cfg),
    parameters: { total: counts.total, byKind: counts.byKind, linear: counts.quantizable },
    memory: estimateWeightMemory(cfg),
    quantization: cfg.quantization,
  };
  if (check !== undefined) {
    description.stored = {
      files: check.files,
      bytesByDtype: check.dtypeBytes,
      unexpectedTensors: check.unexpected,
      quantizedLinear: check.quantized,
    };
  }
  return description;
}

/** What the family adds to the Llama block, in words, for `tuna inspect`. */
function familyFeatures(cfg: ModelConfig): string[] {
  const out: string[] = [];
  if (cfg.qkNorm) out.push("q/k norms");
  if (cfg.normPlusOne) out.push("(1 + w) norms");
  if (cfg.sandwichNorms) out.push("norms after attention and MLP");
  if (cfg.embedScale) out.push("embeddings x sqrt(hidden)");
  if (cfg.hiddenAct === "gelu_tanh") out.push("GeGLU (tanh GELU)");
  if (Math.abs(cfg.attentionScale - 1 / Math.sqrt(cfg.headDim)) > 1e-12) out.push(`attention scale ${cfg.attentionScale.toPrecision(4)}`);
  if (cfg.attnSoftcap !== null) out.push(`score soft-cap ${cfg.attnSoftcap}`);
  if (cfg.finalSoftcap !== null) out.push(`logit soft-cap ${cfg.finalSoftcap}`);
  if (cfg.localRopeTheta !== null) out.push(`local RoPE base ${cfg.localRopeTheta}`);
  return out;
}
