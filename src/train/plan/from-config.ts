// The memory plan of a `tuna train` configuration: the same LoRA settings, quantization, sharding and batch
// shape the run would use, for rank 0 of the launch (the rank that holds the largest optimizer shard).
import type { LaunchConfig, TrainConfig } from "../../config/index.ts";
import type { ModelConfig } from "../../hf/config.ts";
import { quantizeOption, trainLoraSettings } from "../model-setup.ts";
import { shardingOf } from "../sharding.ts";
import { planMemory, type MemoryPlan, type MemoryPlanInput } from "./memory.ts";

export interface PlanTarget {
  /** The model as trained: vocabulary already resized for the chat format's new tokens. */
  cfg: ModelConfig;
  newTokenIds: readonly number[];
  device: "cpu" | "cuda";
  /** Ranks of the job: the launch file's, unless given. */
  world?: number;
  runtimeBytes: number;
  /** DPO: a micro-batch of B pairs holds 2B sequences (chosen and rejected side by side). */
  objective?: "sft" | "dpo";
}

export function planInputFor(c: TrainConfig, launch: LaunchConfig | undefined, target: PlanTarget): MemoryPlanInput {
  const lora = trainLoraSettings(c, target.cfg, target.newTokenIds);
  const world = target.world ?? launch?.numProcesses ?? 1;
  const { stage, parameters } = shardingOf(launch);
  const perMachine = launch === undefined ? world : Math.max(1, world / launch.numMachines);
  const s = launch?.sharding;
  const offload = target.device === "cuda" && s !== undefined && (s.kind === "zero" || s.kind === "fsdp") && (s.offloadOptimizer || s.offloadParams);
  const q = quantizeOption(c);
  const evalTokens = c.eval_strategy === "no" ? 0 : c.per_device_eval_batch_size * c.max_seq_length;
  return {
    cfg: target.cfg,
    lora,
    baseDtype: c.bf16 ? "bf16" : "f32",
    quantize: q === null || q === undefined ? null : q.kind === "4bit" ? { kind: "4bit", ...(q.blocksize === undefined ? {} : { blocksize: q.blocksize }) } : { kind: "8bit" },
    activationDtype: target.device === "cuda" && c.bf16 ? "bf16" : "f32",
    checkpointing: c.gradient_checkpointing,
    tokens: (target.objective === "dpo" ? 2 : 1) * Math.max(c.per_device_train_batch_size * c.max_seq_length, evalTokens),
    world,
    zeroStage: world > 1 ? stage : 0,
    parameterShards: world > 1 && lora !== null ? (parameters === "all" ? world : parameters === "machine" ? perMachine : 1) : 1,
    optimizerOffload: offload,
    backend: target.device,
    runtimeBytes: target.device === "cuda" ? target.runtimeBytes : 0,
  };
}

export function planTraining(c: TrainConfig, launch: LaunchConfig | undefined, target: PlanTarget): MemoryPlan {
  return planMemory(planInputFor(c, launch, target));
}
