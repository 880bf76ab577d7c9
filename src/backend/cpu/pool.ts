// Worker threads for matmul. Each worker evaluates gemm-kernel.ts's functions from their source text (so
// this works from the .ts sources and from the bundle alike) and runs one rectangle of a matmul per job.
//
// Protocol, one job at a time per worker, jobs numbered by `sequence` (never 0): the caller posts
// {job, part} on the worker's port, stores the number in POSTED and notifies. The worker waits until
// POSTED differs from the last job it ran, re-checking the word in a loop (a wake-up from Atomics.wait,
// "ok" included, says nothing: a notify for job j can arrive late, while the worker already waits for
// j + 1), takes from its port the message carrying that number (older ones are dropped), stores the
// number in TAKEN, runs it, and stores it in DONE (and in FAILED, with an error message, if it failed).
// Every wait is bounded; the caller's watchdog turns a worker that stalls into an error naming it.
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { TunaError } from "../../util/errors.ts";
import { gemmMicro, gemmPack, gemmTile, type GemmPart } from "./gemm-kernel.ts";

/** A whole matmul; runGemm cuts it into rectangles. Arrays must be SharedArrayBuffer-backed when threads > 1. */
export type GemmJob = Omit<GemmPart, "i0" | "i1" | "j0" | "j1">;

// Below this many flops a matmul runs on the calling thread: posting a job costs about 40 us.
const PARALLEL_MIN_FLOPS = 2 ** 21;
const START_TIMEOUT_MS = 30_000;
// The caller re-checks its workers this often while it waits for them.
const WAIT_SLICE_MS = 200;
// A worker that has taken its job may run this many times longer than the caller's own (equal) share.
const RUN_TIME_FACTOR = 100;
// A worker waits this long for the message of a job whose number it has seen (it is posted before the number).
const MESSAGE_WAIT_MS = 10_000;
const DEFAULT_WATCHDOG_MS = 60_000;

// Control words of one worker.
const POSTED = 0; // the last job number posted by the caller
const TAKEN = 1; // the last job number the worker took off its port
const DONE = 2; // the last job number the worker finished (failed or not)
const FAILED = 3; // the last job number that failed; its message waits on the port
const STARTED = 4; // 1 once the worker runs
const CONTROL_WORDS = 5;

interface PoolWorker {
  readonly control: Int32Array;
  readonly port: MessagePort;
  readonly thread: Worker;
  /** Set by the 'exit' event: the worker is replaced before its next job. */
  exited: boolean;
}

/** What the worker posts back when its job failed. */
interface WorkerFailure {
  job: number;
  error: string;
}

// One pool per process, shared by every CPU backend: ops are synchronous, so only one job runs at a time.
const workers: (PoolWorker | undefined)[] = [];
let sequence = 0;

/**
 * How long a posted job may wait to be taken, and the least time a taken job may run, before the caller
 * gives up on the worker. TUNA_MATMUL_WATCHDOG_MS overrides the default of 60 s (tests use it).
 */
function watchdogMs(): number {
  const value = Number(process.env.TUNA_MATMUL_WATCHDOG_MS);
  return Number.isFinite(value) && value > 0 ? value : DEFAULT_WATCHDOG_MS;
}

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
    `const fail = (job, error) => { port.postMessage({ job, error }); Atomics.store(control, ${FAILED}, job); };`,
    "let last = 0;",
    "for (;;) {",
    `  let job = Atomics.load(control, ${POSTED});`,
    // Idle: sleep on POSTED in bounded slices until it holds a number this worker has not run.
    `  while (job === last) { Atomics.wait(control, ${POSTED}, last, 1000); job = Atomics.load(control, ${POSTED}); }`,
    "  last = job;",
    `  Atomics.store(control, ${TAKEN}, job);`,
    "  let part = null;",
    `  const deadline = Date.now() + ${MESSAGE_WAIT_MS};`,
    "  while (part === null) {",
    "    const received = receiveMessageOnPort(port);",
    "    if (received !== undefined) { if (received.message.job === job) part = received.message.part; continue; }",
    "    if (Date.now() > deadline) break;",
    `    Atomics.wait(control, ${STARTED}, 1, 1);`,
    "  }",
    `  if (part === null) fail(job, "no message for job " + job + " arrived within ${MESSAGE_WAIT_MS / 1000} s");`,
    `  else { try { ${gemmTile.name}(part); } catch (e) { fail(job, String((e && e.stack) || e)); } }`,
    `  Atomics.store(control, ${DONE}, job);`,
    `  Atomics.notify(control, ${DONE});`,
    "}",
  ].join("\n");
}

function spawnWorker(): PoolWorker {
  const control = new Int32Array(new SharedArrayBuffer(4 * CONTROL_WORDS));
  const channel = new MessageChannel();
  const thread = new Worker(workerSource(), {
    eval: true,
    workerData: { control: control.buffer, port: channel.port2 },
    transferList: [channel.port2],
  });
  // Idle workers must not keep the process alive.
  thread.unref();
  channel.port1.unref();
  const worker: PoolWorker = { control, port: channel.port1, thread, exited: false };
  thread.on("exit", () => {
    worker.exited = true;
  });
  // A worker that throws outside its job loop exits; the 'exit' event marks it, so the error needs no other handling.
  thread.on("error", () => undefined);
  if (Atomics.wait(control, STARTED, 0, START_TIMEOUT_MS) === "timed-out") {
    void thread.terminate();
    throw new TunaError("INTERNAL", `matmul worker thread did not start within ${START_TIMEOUT_MS / 1000} s; the machine may be out of memory or threads`);
  }
  return worker;
}

/** The worker at `index`, started anew when it never ran, exited, or was given up on. */
function liveWorker(index: number): PoolWorker {
  const current = workers[index];
  if (current !== undefined && !current.exited) return current;
  const fresh = spawnWorker();
  workers[index] = fresh;
  return fresh;
}

/** Gives up on a worker: it is stopped and replaced before the next job. */
function retire(index: number): void {
  const worker = workers[index];
  workers[index] = undefined;
  if (worker !== undefined) void worker.thread.terminate();
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

function nextSequence(): number {
  sequence = sequence >= 0x7fff_ffff ? 1 : sequence + 1;
  return sequence;
}

/** The job's message first, then its number: a worker that sees the number finds the message on its port. */
function post(worker: PoolWorker, job: number, part: GemmPart): void {
  worker.port.postMessage({ job, part });
  Atomics.store(worker.control, POSTED, job);
  Atomics.notify(worker.control, POSTED);
}

/**
 * Waits, in bounded slices, until the worker finished `job`. Returns null when it succeeded, else what
 * went wrong: its own error, or the watchdog's (not taken within the limit; taken but running far longer
 * than the caller's equal share), in which case the worker is retired.
 */
function awaitWorker(index: number, count: number, job: number, postedAt: number, ownMs: number): string | null {
  const worker = workers[index]!;
  const { control } = worker;
  const limitMs = watchdogMs();
  const name = `matmul worker thread ${index + 1} of ${count} (thread id ${worker.thread.threadId})`;
  for (;;) {
    const done = Atomics.load(control, DONE);
    if (done === job) break;
    Atomics.wait(control, DONE, done, WAIT_SLICE_MS);
    if (Atomics.load(control, DONE) === job) break;
    const waitedMs = performance.now() - postedAt;
    const taken = Atomics.load(control, TAKEN) === job;
    if (!taken && waitedMs > limitMs) {
      retire(index);
      return `${name} did not take job ${job} within ${(waitedMs / 1000).toFixed(1)} s (it last took job ${Atomics.load(control, TAKEN)})`;
    }
    const runLimitMs = Math.max(limitMs, RUN_TIME_FACTOR * ownMs);
    if (taken && waitedMs > runLimitMs) {
      retire(index);
      return `${name} has run job ${job} for ${(waitedMs / 1000).toFixed(1)} s while the calling thread's equal share took ${(ownMs / 1000).toFixed(3)} s`;
    }
  }
  if (Atomics.load(control, FAILED) !== job) return null;
  for (let received = receiveMessageOnPort(worker.port); received !== undefined; received = receiveMessageOnPort(worker.port)) {
    const failure = received.message as WorkerFailure;
    if (failure.job === job) return `${name}: ${failure.error}`;
  }
  return `${name} failed job ${job} without a message`;
}

/** Runs a matmul on the calling thread plus up to threads - 1 workers; returns when every part is done. */
export function runGemm(job: GemmJob, threads: number): void {
  const parts = splitGemm(job, Math.max(1, Math.floor(threads)));
  if (parts.length > 1 && ![job.a, job.b, job.c].every((x) => x.buffer instanceof SharedArrayBuffer)) {
    // A worker would get copies and its rows of c would be lost.
    throw new TunaError("INTERNAL", "matmul: operands of a multi-threaded matmul must live in SharedArrayBuffers");
  }
  const helpers = parts.length - 1;
  const number = nextSequence();
  const postedAt = performance.now();
  for (let w = 0; w < helpers; w++) post(liveWorker(w), number, parts[w + 1]!);
  // The workers write into c too: wait for them even when this thread's part fails.
  let localError: Error | null = null;
  try {
    gemmTile(parts[0]!);
  } catch (e) {
    localError = new TunaError("INTERNAL", `matmul failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  const ownMs = performance.now() - postedAt;
  const failures: string[] = [];
  for (let w = 0; w < helpers; w++) {
    const failure = awaitWorker(w, helpers, number, postedAt, ownMs);
    if (failure !== null) failures.push(failure);
  }
  if (localError !== null) throw localError;
  if (failures.length > 0) {
    throw new TunaError("INTERNAL", `${failures.join("; ")}. This is a bug in tuna: please report it with the command that ran.`);
  }
}

/** Test hooks: the pool's threads and control words, to kill a worker or send it a stray notify. */
export const matmulPoolForTests = {
  threads: (): Worker[] => workers.flatMap((w) => (w === undefined ? [] : [w.thread])),
  controls: (): Int32Array[] => workers.flatMap((w) => (w === undefined ? [] : [w.control])),
  strayNotify: (): void => {
    for (const w of workers) if (w !== undefined) Atomics.notify(w.control, POSTED);
  },
};
