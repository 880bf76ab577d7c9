// Runs a CPU-bound job over chunks on worker threads (tokenizing rows in parallel): each worker loads the
// module that registered the job, from the .ts sources under tsx or from the esbuild bundle, alike.
import { availableParallelism } from "node:os";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { ERROR_CODES, TunaError, errorMessage, type ErrorCode } from "./errors.ts";

// How a job is found without importing anything by name: the module that defines a job calls
// `registerWorkerJobs({ tokenizeChunk })` at its top level (a no-op outside pool workers) and exports its
// own `import.meta.url`. A worker imports that URL and runs the named job. From the .ts sources the URL is
// the module's file and the worker registers tsx first; inside the bundle every module's import.meta.url
// is the bundle itself, so the worker loads the bundle (which only defines things: bin/tuna.js calls its
// main) and every module's registration runs there. Job names are therefore unique in the whole program.

/** A job takes one chunk and returns (or resolves to) its result; inputs and results must be structured-cloneable. */
export type WorkerJob = (chunk: never) => unknown;

interface PoolSetup {
  entry: string;
  job: string;
  /** URL of tsx's ESM API when the entry is TypeScript source; null for JavaScript (the bundle). */
  tsxApi: string | null;
}

interface RemoteError {
  name: string;
  message: string;
  stack: string | undefined;
  code: string | undefined;
}

type WorkerReply = { fatal: RemoteError } | { index: number; ok: true; output: unknown } | { index: number; ok: false; error: RemoteError };

const SETUP_KEY = "tunaWorkerPool";
const SERVE_KEY = "tuna.workerPool.serve";
const SERVE = Symbol.for(SERVE_KEY);

// Runs in each worker as eval'd code (CommonJS, or ESM when the parent ran with --input-type=module, so only
// dynamic import()): register tsx when needed, import the entry (which registers its jobs), then hand over
// to the entry's copy of this module through a global symbol.
const BOOTSTRAP = `"use strict";
import("node:worker_threads").then(async ({ workerData, parentPort }) => {
  const setup = workerData.${SETUP_KEY};
  try {
    if (setup.tsxApi !== null) (await import(setup.tsxApi)).register();
    await import(setup.entry);
    const serve = globalThis[Symbol.for(${JSON.stringify(SERVE_KEY)})];
    if (typeof serve !== "function") {
      throw new Error(setup.entry + " registered no worker jobs; call registerWorkerJobs({ " + setup.job + " }) at its top level");
    }
    serve();
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    parentPort.postMessage({ fatal: { name: err.name, message: err.message, stack: err.stack, code: typeof err.code === "string" ? err.code : undefined } });
  }
});
`;

const registry = new Map<string, WorkerJob>();

function poolSetup(): PoolSetup | undefined {
  if (isMainThread || typeof workerData !== "object" || workerData === null) return undefined;
  return (workerData as Record<string, PoolSetup | undefined>)[SETUP_KEY];
}

/** True on a thread started by runInWorkers. */
export function isPoolWorkerThread(): boolean {
  return poolSetup() !== undefined;
}

function describeError(e: unknown): RemoteError {
  const err = e instanceof Error ? e : new Error(String(e));
  const code = (err as { code?: unknown }).code;
  return { name: err.name, message: err.message, stack: err.stack, code: typeof code === "string" ? code : undefined };
}

function serve(): void {
  const setup = poolSetup()!;
  const port = parentPort!;
  const job = registry.get(setup.job) as ((chunk: unknown) => unknown) | undefined;
  if (job === undefined) {
    const known = [...registry.keys()].join(", ") || "nothing";
    throw new TunaError("INTERNAL", `worker job "${setup.job}" is not registered by ${setup.entry} (it registers ${known}); call registerWorkerJobs({ ${setup.job} }) at its top level`);
  }
  port.on("message", (message: { index: number; input: unknown }) => {
    const { index, input } = message;
    void (async () => {
      try {
        port.postMessage({ index, ok: true, output: await job(input) });
      } catch (e) {
        port.postMessage({ index, ok: false, error: describeError(e) });
      }
    })();
  });
}

/** Makes jobs runnable by runInWorkers; call at the top level of the module that defines them. No-op outside pool workers. */
export function registerWorkerJobs(jobs: Record<string, WorkerJob>): void {
  if (!isPoolWorkerThread()) return;
  for (const [name, fn] of Object.entries(jobs)) {
    const known = registry.get(name);
    if (known !== undefined && known !== fn) throw new TunaError("INTERNAL", `two worker jobs are named "${name}"; worker job names must be unique in the program`);
    registry.set(name, fn);
  }
  (globalThis as Record<symbol, unknown>)[SERVE] = serve;
}

function tsxApiUrl(entry: string): string {
  try {
    return import.meta.resolve("tsx/esm/api");
  } catch (e) {
    throw new TunaError("UNSUPPORTED", `worker job module ${entry} is TypeScript source, which needs the tsx dev dependency; install it (npm ci) or run the bundle (dist/tuna.mjs)`, { cause: e });
  }
}

function remoteToError(what: string, remote: RemoteError): TunaError {
  const cause = new Error(remote.message);
  cause.name = remote.name;
  if (remote.stack !== undefined) cause.stack = remote.stack;
  const code = (ERROR_CODES as readonly string[]).includes(remote.code ?? "") ? (remote.code as ErrorCode) : "INTERNAL";
  return new TunaError(code, `${what}: ${remote.message}`, { cause });
}

/**
 * Runs job `exportName` (registered by the module at `moduleUrl`, see registerWorkerJobs) on every chunk,
 * on up to `threads` worker threads, one chunk at a time per worker. Results come back in input order;
 * the first failure stops every worker and rejects with the chunk's index (and the job's error code).
 * Name the job's type to type the call: `runInWorkers<typeof tokenizeChunk>(TOKENIZE_JOBS_URL, "tokenizeChunk", chunks)`.
 */
export async function runInWorkers<TJob extends WorkerJob = (chunk: unknown) => unknown>(
  moduleUrl: string | URL,
  exportName: string,
  chunks: readonly Parameters<TJob>[0][],
  threads = availableParallelism(),
): Promise<Awaited<ReturnType<TJob>>[]> {
  type TOut = Awaited<ReturnType<TJob>>;
  if (!Number.isInteger(threads) || threads < 1) throw new TunaError("CONFIG_INVALID", `worker threads must be a positive integer, got ${threads}`);
  const entry = String(moduleUrl);
  if (!entry.startsWith("file:")) throw new TunaError("INTERNAL", `worker job module must be a file: URL (its import.meta.url), got ${entry}`);
  if (chunks.length === 0) return [];
  const setup: PoolSetup = { entry, job: exportName, tsxApi: /\.[cm]?tsx?$/.test(new URL(entry).pathname) ? tsxApiUrl(entry) : null };
  const count = Math.min(threads, chunks.length);
  return new Promise<TOut[]>((resolve, reject) => {
    const results = new Array<TOut>(chunks.length);
    const workers: Worker[] = [];
    let next = 0;
    let done = 0;
    // An object, so that the spawn loop sees a failure that happened in a callback.
    const state = { settled: false };
    const finish = (error?: TunaError): void => {
      if (state.settled) return;
      state.settled = true;
      for (const w of workers) void w.terminate();
      if (error === undefined) resolve(results);
      else reject(error);
    };
    const feed = (w: Worker): void => {
      if (next >= chunks.length) return;
      const index = next++;
      try {
        w.postMessage({ index, input: chunks[index] });
      } catch (e) {
        finish(new TunaError("INTERNAL", `worker job ${exportName}: chunk ${index} cannot be sent to a worker thread (${errorMessage(e)})`, { cause: e }));
      }
    };
    for (let i = 0; i < count && !state.settled; i++) {
      const w = new Worker(BOOTSTRAP, { eval: true, workerData: { [SETUP_KEY]: setup } });
      workers.push(w);
      w.on("message", (reply: WorkerReply) => {
        if ("fatal" in reply) {
          finish(remoteToError(`worker job ${exportName} could not start from ${entry}`, reply.fatal));
        } else if (!reply.ok) {
          finish(remoteToError(`worker job ${exportName} failed on chunk ${reply.index}`, reply.error));
        } else {
          results[reply.index] = reply.output as TOut;
          if (++done === chunks.length) finish();
          else feed(w);
        }
      });
      w.on("error", (e) => {
        finish(new TunaError("INTERNAL", `worker thread for job ${exportName} (${entry}) failed: ${errorMessage(e)}`, { cause: e }));
      });
      w.on("exit", (code) => {
        finish(new TunaError("INTERNAL", `worker thread for job ${exportName} (${entry}) exited with code ${code} before its chunks were done`));
      });
      feed(w);
    }
  });
}
