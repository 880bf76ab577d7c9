// What a launch's sharding settings (DeepSpeed ZeRO stage, FSDP strategy) mean for tuna.
import type { LaunchConfig } from "../config/index.ts";
import type { ShardingStage } from "./data-parallel.ts";

/**
 * What an accelerate file's sharding becomes. Optimizer state and gradients: DeepSpeed stage 1 -> 1, stages
 * 2 and 3 -> 2; FSDP with any sharding -> 2. Parameters (the frozen base, LoRA/QLoRA): DeepSpeed stage 3, FSDP
 * FULL_SHARD over every rank ("all"), HYBRID_SHARD over each machine's ranks ("machine"); HYBRID_SHARD_ZERO2 and
 * SHARD_GRAD_OP keep them whole.
 */
export function shardingOf(launch: LaunchConfig | undefined): { stage: ShardingStage; parameters: false | "all" | "machine" } {
  const s = launch?.sharding;
  if (s === undefined) return { stage: 0, parameters: false };
  if (s.kind === "zero") return { stage: s.stage === 0 ? 0 : s.stage === 1 ? 1 : 2, parameters: s.stage === 3 ? "all" : false };
  if (s.kind === "fsdp") return { stage: s.strategy === "NO_SHARD" ? 0 : 2, parameters: s.strategy === "FULL_SHARD" ? "all" : s.strategy === "HYBRID_SHARD" ? "machine" : false };
  return { stage: 0, parameters: false };
}
