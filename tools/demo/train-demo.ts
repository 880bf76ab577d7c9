// The demo's two training runs with tuna's own trainer on the CPU backend: full pretraining of the
// random-init base model, and the LoRA fine-tune that validates the demo (is reversal learnable fast?).
import type { PackedSequence } from "../../src/data/types.ts";
import type { LoraOptions } from "../../src/lora/settings.ts";
import { asTrainingModel, type CausalLm } from "../../src/model/causal-lm/model.ts";
import { train, type LogEntry, type TrainerSettings } from "../../src/train/trainer.ts";

export interface RunSettings {
  /** Optimizer steps; <= 0 means one pass over the rows (numTrainEpochs 1). */
  steps: number;
  batchSize: number;
  learningRate: number;
  seed: number;
}

export interface LoraRunSettings extends RunSettings {
  lora: LoraOptions;
}

export interface RunReport {
  steps: number;
  trainLoss: number;
  /** The loss logged over the last logging window. */
  finalLoss: number;
  wallSeconds: number;
  /** CPU time of this process during training: the cost without other programs' load. */
  cpuSeconds: number;
  tokensPerSecond: number;
}

/** HF Trainer defaults where the demo has no reason to differ; no NEFTune, no weight decay, cosine. */
export function trainerSettings(run: RunSettings, padTokenId: number): TrainerSettings {
  return {
    seed: run.seed,
    numTrainEpochs: 1,
    maxSteps: run.steps,
    trainBatchSize: run.batchSize,
    evalBatchSize: 64,
    gradientAccumulationSteps: 1,
    learningRate: run.learningRate,
    schedule: { type: "cosine", warmupSteps: 0, warmupRatio: 0.05 },
    adamw: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 },
    maxGradNorm: 1,
    padded: false,
    sampling: "random",
    dataSeed: undefined,
    dropLast: false,
    logging: { strategy: "steps", steps: 50, firstStep: true },
    eval: { strategy: "no", steps: 1 },
    save: { strategy: "no", steps: 1 },
    neftuneNoiseAlpha: undefined,
    nanInfPolicy: "stop",
    padTokenId,
  };
}

/** Trains `model` in place on `sequences`; `onLog` sees the trainer's log lines. */
export async function runTraining(
  model: CausalLm,
  sequences: readonly PackedSequence[],
  settings: TrainerSettings,
  onLog: (entry: LogEntry) => void,
): Promise<RunReport> {
  const cpuBefore = process.cpuUsage();
  const result = await train(asTrainingModel(model), { train: sequences }, settings, { onLog, saveCheckpoint: () => Promise.resolve() });
  const cpu = process.cpuUsage(cpuBefore);
  const losses = result.logHistory.filter((e) => e["loss"] !== undefined).map((e) => e["loss"]!);
  const wallSeconds = result.runtimeMs / 1000;
  return {
    steps: result.globalStep,
    trainLoss: result.trainLoss,
    finalLoss: losses.at(-1) ?? NaN,
    wallSeconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    tokensPerSecond: result.tokensSeen / wallSeconds,
  };
}
