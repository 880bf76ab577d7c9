// tuna launch's environment for its ranks: torchrun's variables, NCCL_* passed unchanged, NVLink multicast
// off unless the user set it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";

const root = new URL("../..", import.meta.url).pathname;
const printEnv = "console.log([process.env.RANK, process.env.LOCAL_RANK, process.env.WORLD_SIZE, process.env.NCCL_NVLS_ENABLE, process.env.NVSHMEM_DISABLE_NVLS, process.env.NCCL_DEBUG].join(' '))";

function launch(env: Record<string, string>): string[] {
  const base = { ...process.env };
  delete base.NCCL_NVLS_ENABLE;
  delete base.NVSHMEM_DISABLE_NVLS;
  const r = spawnSync(process.execPath, ["--import", "tsx", "tools/tuna-dev.ts", "launch", "--nproc_per_node", "2", "--master_port", "29999", process.execPath, "-e", printEnv], {
    cwd: root,
    encoding: "utf8",
    env: { ...base, ...env },
  });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split("\n").sort();
}

void test("launch: each rank gets its place, NCCL_* unchanged, and NVLink multicast off unless the user set it", () => {
  assert.deepEqual(launch({ NCCL_DEBUG: "WARN" }), ["0 0 2 0 1 WARN", "1 1 2 0 1 WARN"]);
  assert.deepEqual(launch({ NCCL_DEBUG: "INFO", NCCL_NVLS_ENABLE: "1" }), ["0 0 2 1 1 INFO", "1 1 2 1 1 INFO"]);
});
