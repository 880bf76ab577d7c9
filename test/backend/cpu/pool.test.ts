// The matmul worker pool's protocol: stray and late notifies, terminated and dead workers, failures in a
// worker, and the SharedArrayBuffer guard. Scenarios that would hang a broken pool run in a child process.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { runGemm, type GemmJob } from "../../../src/backend/cpu/pool.ts";
import { isTunaError } from "../../../src/util/errors.ts";

const script = fileURLToPath(new URL("./pool-scenarios.ts", import.meta.url));

function scenario(name: string, env: Record<string, string> = {}): { ok: boolean; [key: string]: unknown } {
  const result = spawnSync(process.execPath, ["--import", "tsx", script, name], {
    encoding: "utf8",
    timeout: 60_000,
    env: { ...process.env, ...env },
  });
  assert.equal(result.signal, null, `scenario ${name} was killed (${result.signal}): the pool hung\n${result.stderr}`);
  const line = result.stdout.trim().split("\n").at(-1) ?? "";
  assert.ok(line.startsWith("{"), `scenario ${name} printed no result (exit ${result.status})\n${result.stdout}\n${result.stderr}`);
  return JSON.parse(line) as { ok: boolean };
}

void test("late and stray notifies on a worker's control word neither skip nor repeat a job (300 jobs)", () => {
  const result = scenario("stray-notify");
  assert.ok(result.ok, JSON.stringify(result));
});

void test("a terminated matmul worker is replaced: the next matmul completes with the right values", () => {
  const result = scenario("terminated-worker");
  assert.ok(result.ok, JSON.stringify(result));
});

void test("a worker that died unseen is named by the watchdog within its bound, and the pool recovers", () => {
  const result = scenario("dead-worker-watchdog", { TUNA_MATMUL_WATCHDOG_MS: "1500" });
  assert.ok(result.ok, JSON.stringify(result));
  assert.ok((result.waitedMs as number) >= 1400 && (result.waitedMs as number) < 10_000, `waited ${String(result.waitedMs)} ms`);
});

function sharedFloats(n: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(4 * n));
}

void test("a failure inside a worker's part is reported, not ignored", () => {
  // Split along M (M > N): the calling thread takes rows 0..127, the worker rows 128..255, and c only has
  // room for the first half, so only the worker's part fails.
  const [M, N, K] = [256, 64, 128];
  const job: GemmJob = {
    c: sharedFloats(128 * N),
    a: sharedFloats(M * K),
    b: sharedFloats(K * N),
    M,
    N,
    K,
    transA: false,
    transB: false,
    alpha: 1,
    accumulate: false,
  };
  assert.throws(
    () => {
      runGemm(job, 2);
    },
    (e: unknown) => isTunaError(e) && e.code === "INTERNAL" && /matmul worker thread 1 of 1/.test(e.message) && /rows 128\.\.256/.test(e.message),
  );
});

void test("a multi-threaded matmul over non-shared arrays is refused (a worker's rows would be lost)", () => {
  const [M, N, K] = [128, 128, 128];
  const job: GemmJob = {
    c: new Float32Array(M * N),
    a: new Float32Array(M * K),
    b: new Float32Array(K * N),
    M,
    N,
    K,
    transA: false,
    transB: false,
    alpha: 1,
    accumulate: false,
  };
  assert.throws(() => {
    runGemm(job, 2);
  }, /must live in SharedArrayBuffers/);
  // One thread needs no shared memory.
  runGemm(job, 1);
});
