import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { build } from "esbuild";
import { isPoolWorkerThread, runInWorkers } from "../../src/util/worker-pool.ts";
import { isTunaError } from "../../src/util/errors.ts";
import { POOL_JOBS_URL, type delayedSquare, type sumChunk } from "./fixtures/pool-jobs.ts";

function rejectsWith(code: string, pattern: RegExp): (e: unknown) => boolean {
  return (e) => {
    assert.ok(isTunaError(e), String(e));
    assert.equal(e.code, code);
    assert.match(e.message, pattern);
    return true;
  };
}

test("worker pool from the .ts sources: results in input order, spread over the threads", async () => {
  assert.equal(isPoolWorkerThread(), false);
  // Earlier chunks take longer, so they finish after later ones.
  const chunks = [60, 10, 40, 0, 20, 5].map((delayMs, value) => ({ value, delayMs }));
  const squares = await runInWorkers<typeof delayedSquare>(POOL_JOBS_URL, "delayedSquare", chunks, 3);
  assert.deepEqual(squares.map((s) => Array.from(s)), [[0, 0], [1, 1], [2, 4], [3, 9], [4, 16], [5, 25]]);
  assert.ok(squares[0] instanceof Int32Array, "typed arrays come back as typed arrays");

  const sums = await runInWorkers<typeof sumChunk>(POOL_JOBS_URL, "sumChunk", [[1, 2], [3, 4, 5], [], [6]], 2);
  assert.deepEqual(sums.map((s) => s.sum), [3, 12, 0, 6]);
  assert.equal(new Set(sums.map((s) => s.thread)).size, 2, "each of the two workers took a chunk");
  assert.deepEqual(await runInWorkers(POOL_JOBS_URL, "sumChunk", [], 4), []);
});

test("worker pool: a job's error rejects with the chunk index and the job's error code", async () => {
  await assert.rejects(runInWorkers(POOL_JOBS_URL, "failOnThree", [1, 2, 3, 4], 2), rejectsWith("FILE_FORMAT", /failOnThree failed on chunk 2: value 3 is not accepted/));
  // A non-tuna error becomes INTERNAL, its message kept; the original stack is the cause.
  await assert.rejects(runInWorkers(POOL_JOBS_URL, "failOnThree", [13], 1), (e: unknown) => {
    rejectsWith("INTERNAL", /chunk 0: 13 is unlucky/)(e);
    const cause = (e as Error).cause;
    assert.ok(cause instanceof Error);
    assert.match(cause.stack ?? "", /pool-jobs\.ts/);
    return true;
  });
  await assert.rejects(runInWorkers(POOL_JOBS_URL, "noSuchJob", [1], 1), rejectsWith("INTERNAL", /"noSuchJob" is not registered .*registers sumChunk, delayedSquare, failOnThree/));
  const notAJobModule = new URL("../../src/util/random.ts", import.meta.url);
  await assert.rejects(runInWorkers(notAJobModule, "createRng", [1], 1), rejectsWith("INTERNAL", /registered no worker jobs/));
  await assert.rejects(runInWorkers(POOL_JOBS_URL, "sumChunk", [[1]], 0), rejectsWith("CONFIG_INVALID", /positive integer/));
  await assert.rejects(runInWorkers(POOL_JOBS_URL, "sumChunk", [() => 1], 1), rejectsWith("INTERNAL", /chunk 0 cannot be sent/));
});

test("worker pool from an esbuild bundle run by plain node: the bundle is the worker entry", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tuna-pool-bundle-"));
  try {
    const outfile = join(dir, "bundle.mjs");
    // The options of tools/build.mjs (dist/tuna.mjs), with a test entry: the CLI does not run jobs yet.
    await build({
      entryPoints: [new URL("./fixtures/pool-bundle-entry.ts", import.meta.url).pathname],
      outfile,
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      external: ["koffi"],
      banner: { js: "import { createRequire as __tunaCreateRequire } from 'node:module'; const require = __tunaCreateRequire(import.meta.url);" },
      logLevel: "silent",
    });
    assert.doesNotMatch(await readFile(outfile, "utf8"), /pool-jobs\.ts"/, "no source path survives in the bundle");
    // As bin/tuna.js does: import the bundle and call an export, with no tsx anywhere in the process.
    const script = "const m = await import(process.env.TUNA_BUNDLE); console.log(JSON.stringify(await m.runPoolDemo()));";
    const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], {
      cwd: dir,
      env: { ...process.env, TUNA_BUNDLE: pathToFileURL(outfile).href, NODE_OPTIONS: "" },
    });
    const result = JSON.parse(stdout) as { entry: string; squares: number[][]; failure: unknown };
    assert.equal(result.entry, pathToFileURL(outfile).href);
    assert.deepEqual(result.squares, [[0, 0], [1, 1], [2, 4], [3, 9], [4, 16]]);
    assert.deepEqual(result.failure, { code: "FILE_FORMAT", message: "worker job failOnThree failed on chunk 2: value 3 is not accepted" });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
