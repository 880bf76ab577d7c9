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
