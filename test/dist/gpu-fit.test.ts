// More processes per machine than GPUs is refused before any rank starts; the CPU, sharing and fitting jobs pass.
import { test } from "node:test";
import assert from "node:assert/strict";
import { checkRanksFitGpus } from "../../src/dist/gpu-fit.ts";
import { TunaError } from "../../src/util/errors.ts";

const base = { processesPerMachine: 4, gpusSeen: 2, gpuIds: undefined, device: "auto", shareGpus: false } as const;

void test("4 processes on a machine with 2 GPUs: refused, naming both numbers and the ways out", () => {
  assert.throws(
    () => { checkRanksFitGpus(base); },
    (e: unknown) => e instanceof TunaError && e.code === "CONFIG_INVALID" && /4 processes per machine need 4 GPUs .* but this machine has 2 GPUs\. Lower num_processes .* to 2, .*--device cpu.*TUNA_COLLECTIVE=host/.test(e.message),
  );
  assert.throws(() => { checkRanksFitGpus({ ...base, gpusSeen: 8, gpuIds: "0,1,2" }); }, /gpu_ids 0,1,2 names 3/);
});

void test("what fits or needs no GPU passes: enough GPUs, gpu_ids all, --device cpu, shared GPUs, no GPU at all, one process", () => {
  checkRanksFitGpus({ ...base, gpusSeen: 4 });
  checkRanksFitGpus({ ...base, gpusSeen: 8, gpuIds: "all" });
  checkRanksFitGpus({ ...base, device: "cpu" });
  checkRanksFitGpus({ ...base, shareGpus: true });
  checkRanksFitGpus({ ...base, gpusSeen: undefined });
  checkRanksFitGpus({ ...base, gpusSeen: 0 });
  checkRanksFitGpus({ ...base, processesPerMachine: 1, gpusSeen: 1 });
});
