// Scenarios for the matmul pool that hang a broken protocol, run in a child process by pool.test.ts so a
// regression ends in a timeout there instead of a hung test runner. Prints one JSON line and exits 0 when the
// scenario behaved as the test expects, else prints why and exits 1. Usage: pool-scenarios.ts NAME.
import { Worker } from "node:worker_threads";
import { matmulPoolForTests, runGemm, type GemmJob } from "../../../src/backend/cpu/pool.ts";
import { isTunaError } from "../../../src/util/errors.ts";

const M = 96;
const N = 160;
const K = 200; // 2*M*N*K = 6.1 Mflop: above the pool's threshold, so the work is split

function shared(values: number[] | number): Float32Array {
  const n = typeof values === "number" ? values : values.length;
  const out = new Float32Array(new SharedArrayBuffer(4 * n));
  if (typeof values !== "number") out.set(values);
  return out;
}

let seed = 7;
function random(): number {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed / 2 ** 31 - 0.5;
}

const a = shared(Array.from({ length: M * K }, random));
const b = shared(Array.from({ length: K * N }, random));
const expected = new Float64Array(M * N);
for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) {
  let s = 0;
  for (let k = 0; k < K; k++) s += a[i * K + k]! * b[k * N + j]!;
  expected[i * N + j] = s;
}

/** Runs the product on `threads` threads and returns the largest difference from the float64 reference. */
function product(threads: number): number {
  const c = shared(M * N);
  const job: GemmJob = { c, a, b, M, N, K, transA: false, transB: false, alpha: 1, accumulate: false };
  runGemm(job, threads);
  let worst = 0;
  for (let i = 0; i < c.length; i++) worst = Math.max(worst, Math.abs(c[i]! - expected[i]!));
  return worst;
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function finish(ok: boolean, detail: Record<string, unknown>): never {
  console.log(JSON.stringify({ ok, ...detail }));
  process.exit(ok ? 0 : 1);
}

const TOLERANCE = 1e-4;
const scenario = process.argv[2];

if (scenario === "stray-notify") {
  // A late Atomics.notify for an earlier job must not make a worker run or skip a job: notify between jobs,
  // and from another thread at random moments during 300 jobs.
  product(3);
  const controls = matmulPoolForTests.controls();
  const stop = new Int32Array(new SharedArrayBuffer(4));
  const notifier = new Worker(
    `const { workerData } = require("node:worker_threads");
     const stop = new Int32Array(workerData.stop);
     const controls = workerData.controls.map((b) => new Int32Array(b));
     let n = 0;
     while (Atomics.load(stop, 0) === 0) {
       for (const c of controls) Atomics.notify(c, 0);
       n++;
       Atomics.wait(stop, 0, 0, (n % 3) * 0.2);
     }`,
    { eval: true, workerData: { stop: stop.buffer, controls: controls.map((c) => c.buffer) } },
  );
  let worst = 0;
  for (let i = 0; i < 300; i++) {
    matmulPoolForTests.strayNotify();
    worst = Math.max(worst, product(3));
  }
  Atomics.store(stop, 0, 1);
  void notifier.terminate();
  finish(worst < TOLERANCE, { jobs: 300, worst });
} else if (scenario === "terminated-worker") {
  // A worker that was terminated (and whose exit the process has seen) is replaced before the next job.
  product(2);
  const threads = matmulPoolForTests.threads();
  await Promise.all(threads.map((t) => t.terminate()));
  const worst = product(2);
  finish(worst < TOLERANCE && threads.length === 1, { worst, terminated: threads.length });
} else if (scenario === "dead-worker-watchdog") {
  // A worker that died while the caller was busy (its exit not seen yet) never takes the job: the
  // watchdog (TUNA_MATMUL_WATCHDOG_MS) turns that into an error naming it, and the next job runs on a new worker.
  product(2);
  for (const t of matmulPoolForTests.threads()) void t.terminate();
  sleepMs(300);
  const started = performance.now();
  let message = "";
  try {
    product(2);
  } catch (e) {
    message = isTunaError(e) ? `${e.code}: ${e.message}` : `not a TunaError: ${String(e)}`;
  }
  const waitedMs = performance.now() - started;
  await new Promise((resolve) => setTimeout(resolve, 50));
  const worst = product(2);
  finish(message.startsWith("INTERNAL: matmul worker thread 1 of 1") && worst < TOLERANCE, { message, waitedMs, worst });
} else {
  finish(false, { error: `unknown scenario ${scenario ?? "(none)"}` });
}
