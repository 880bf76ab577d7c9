// What each accelerate sharding setting becomes: optimizer/gradient stage and whether the frozen base is sharded.
import { test } from "node:test";
import assert from "node:assert/strict";
import { shardingOf } from "../../src/train/sharding.ts";
import type { LaunchConfig } from "../../src/config/index.ts";

const launch = (sharding: LaunchConfig["sharding"]): LaunchConfig => ({
  numProcesses: 2, numMachines: 1, machineRank: 0, mainProcessIp: undefined, mainProcessPort: undefined, gpuIds: undefined, mixedPrecision: undefined, sharding, source: "test.yaml",
});
const zero = (stage: 0 | 1 | 2 | 3): LaunchConfig["sharding"] => ({ kind: "zero", stage, offloadParams: false, offloadOptimizer: false, offloadParamDevice: "none", offloadOptimizerDevice: "none", zero3Init: false });
const fsdp = (strategy: "FULL_SHARD" | "SHARD_GRAD_OP" | "NO_SHARD" | "HYBRID_SHARD" | "HYBRID_SHARD_ZERO2"): LaunchConfig["sharding"] => ({ kind: "fsdp", strategy, offloadParams: false, offloadOptimizer: false, cpuRamEfficientLoading: false, useOrigParams: true });

void test("DeepSpeed stages and FSDP strategies: optimizer/gradient sharding, and parameters only for stage 3 and FULL_SHARD (over all ranks) and HYBRID_SHARD (over each machine's)", () => {
  assert.deepEqual(shardingOf(undefined), { stage: 0, parameters: false });
  assert.deepEqual([0, 1, 2, 3].map((s) => shardingOf(launch(zero(s as 0 | 1 | 2 | 3)))), [
    { stage: 0, parameters: false },
    { stage: 1, parameters: false },
    { stage: 2, parameters: false },
    { stage: 2, parameters: "all" },
  ]);
  assert.deepEqual(
    (["NO_SHARD", "SHARD_GRAD_OP", "FULL_SHARD", "HYBRID_SHARD", "HYBRID_SHARD_ZERO2"] as const).map((s) => shardingOf(launch(fsdp(s)))),
    [
      { stage: 0, parameters: false },
      { stage: 2, parameters: false },
      { stage: 2, parameters: "all" },
      { stage: 2, parameters: "machine" },
      { stage: 2, parameters: false },
    ],
  );
  assert.deepEqual(shardingOf(launch({ kind: "ddp", offloadParams: false, offloadOptimizer: false })), { stage: 0, parameters: false });
});
