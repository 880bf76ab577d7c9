// Worker threads for matmul. Each worker evaluates gemm-kernel.ts's functions from their source text (so
// this works from the .ts sources and from the bundle alike), sleeps on a shared control word, takes its
// rectangle from a message port synchronously, and signals when done; the caller blocks in Atomics.wait.
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { TunaError } from "../../util/errors.ts";
import { gemmMicro, gemmPack, gemmTile, type GemmPart } from "./gemm-kernel.ts";

/** A whole matmul; runGemm cuts it into rectangles. Arrays must be SharedArrayBuffer-backed when threads > 1. */
export type GemmJob = Omit<GemmPart, "i0" | "i1" | "j0" | "j1">;

// Below this many flops a matmul runs on the calling thread: posting a job costs about 40 us.
const PARALLEL_MIN_FLOPS = 2 ** 21;
const START_TIMEOUT_MS = 30_000;

// Control words of one worker: the last job posted, the last job finished, a failure flag, a started flag.
const POSTED = 0;
const DONE = 1;
const FAILED = 2;
const STARTED = 3;

interface PoolWorker {
  readonly control: Int32Array;
  readonly port: MessagePort;
}

// One pool per process, shared by every CPU backend: ops are synchronous, so only one job runs at a time.
const workers: PoolWorker[] = [];
let sequence = 0;

function workerSource(): string {
  return [
    '"use strict";',
    // tsx compiles with keepNames, which wraps inner functions in __name(fn, "name").
    "const __name = (fn) => fn;",
    gemmPack.toString(),
    gemmMicro.toString(),
    gemmTile.toString(),
    'const { workerData, receiveMessageOnPort } = require("node:worker_threads");',
    "const control = new Int32Array(workerData.control);",
    "const port = workerData.port;",
    `Atomics.store(control, ${STARTED}, 1);`,
    `Atomics.notify(control, ${STARTED});`,
    "let seen = 0;",
    "for (;;) {",
    `  Atomics.wait(control, ${POSTED}, seen);`,
    `  seen = Atomics.load(control, ${POSTED});`,
    "  let received = receiveMessageOnPort(port);",
    `  while (received === undefined) { Atomics.wait(control, ${STARTED}, 1, 1); received = receiveMessageOnPort(port); }`,
    `  try { ${gemmTile.name}(received.message); }`,
    `  catch (e) { Atomics.store(control, ${FAILED}, 1); port.postMessage(String((e && e.stack) || e)); }`,
    `  Atomics.store(control, ${DONE}, seen);`,
    `  Atomics.notify(control, ${DONE});`,
    "}",
  ].join("\n");
}

function spawnWorker(): PoolWorker {
  const control = new Int32Array(new SharedArrayBuffer(4 * 4));
  const channel = new MessageChannel();
  const worker = new Worker(workerSource(), {
    eval: true,
    workerData: { control: control.buffer, port: channel.port2 },
    transferList: [channel.port2],
  });
  // Idle workers must not keep the process alive.
  worker.unref();
  channel.port1.unref();
  if (Atomics.wait(control, STARTED, 0, START_TIMEOUT_MS) === "timed-out") {
    void worker.terminate();
    throw new TunaError("INTERNAL", `matmul worker thread did not start within ${START_TIMEOUT_MS / 1000} s; run with threads: 1 to do without workers`);
  }
  return { control, port: channel.port1 };
}

/** Cuts the larger of M and N into up to `threads` ranges, multiples of 4 long (the micro-kernel's width). */
function splitGemm(job: GemmJob, threads: number): GemmPart[] {
  const { M, N, K } = job;
  const parts = 2 * M * N * K < PARALLEL_MIN_FLOPS ? 1 : threads;
  const alongN = N >= M;
  const length = alongN ? N : M;
  const chunk = Math.max(4, (Math.ceil(length / parts) + 3) & ~3);
  const out: GemmPart[] = [];
  for (let start = 0; start < length || out.length === 0; start += chunk) {
    const end = Math.min(length, start + chunk);
    out.push(alongN ? { ...job, i0: 0, i1: M, j0: start, j1: end } : { ...job, i0: start, i1: end, j0: 0, j1: N });
  }
  return out;
}

/** Runs a matmul on the calling thread plus up to threads - 1 workers; returns when every part is done. */
export function runGemm(job: GemmJob, threads: number): void {
  const parts = splitGemm(job, Math.max(1, Math.floor(threads)));
  if (parts.length > 1 && ![job.a, job.b, job.c].every((x) => x.buffer instanceof SharedArrayBuffer)) {
    // A worker would get copies and its rows of c would be lost.
    throw new TunaError("INTERNAL", "matmul: operands of a multi-threaded matmul must live in SharedArrayBuffers");
  }
  while (workers.length < parts.length - 1) workers.push(spawnWorker());
  sequence = (sequence + 1) | 0;
  for (let w = 1; w < parts.length; w++) {
    const worker = workers[w - 1]!;
    worker.port.postMessage(parts[w]);
    Atomics.store(worker.control, POSTED, sequence);
    Atomics.notify(worker.control, POSTED);
  }
  // The workers write into c too: wait for them even when this thread's part fails.
  let localError: Error | null = null;
  try {
    gemmTile(parts[0]!);
  } catch (e) {
    localError = e instanceof Error ? e : new TunaError("INTERNAL", `matmul failed: ${String(e)}`);
  }
  const failures: string[] = [];
  for (let w = 1; w < parts.length; w++) {
    const { control, port } = workers[w - 1]!;
    for (let done = Atomics.load(control, DONE); done !== sequence; done = Atomics.load(control, DONE)) {
      Atomics.wait(control, DONE, done);
    }
    if (Atomics.exchange(control, FAILED, 0) !== 0) failures.push(String(receiveMessageOnPort(port)?.message));
  }
  if (localError !== null) throw localError;
  if (failures.length > 0) throw new TunaError("INTERNAL", `matmul worker thread failed: ${failures.join("; ")}`);
}
