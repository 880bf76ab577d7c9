import { test } from "node:test";
import assert from "node:assert/strict";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createMetricsJsonlWriter,
  metricsJsonlPath,
  parseMetricsJsonl,
  readMetricsJsonl,
  serializeLogEntry,
} from "../../../src/train/logging/metrics-jsonl.ts";
import { isTunaError } from "../../../src/util/errors.ts";

async function withTempDir(body: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "tuna-jsonl-test-"));
  try {
    await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test("each entry is one JSON line, on disk as soon as append returns", async () => {
  await withTempDir((dir) => {
    const path = metricsJsonlPath(join(dir, "out"));
    assert.equal(path, join(dir, "out", "metrics.jsonl"));
    const writer = createMetricsJsonlWriter(path);
    writer.append({ step: 10, epoch: 0.1, loss: 2.5, learning_rate: 2e-4, grad_norm: 1.25, tokens_per_second: 1500 });
    // Not closed: the line must already be in the file.
    assert.equal(readFileSync(path, "utf8"), '{"step":10,"epoch":0.1,"loss":2.5,"learning_rate":0.0002,"grad_norm":1.25,"tokens_per_second":1500}\n');
    writer.append({ step: 20, eval_loss: 2.25, eval_perplexity: 9.487735836358526 });
    assert.equal(readFileSync(path, "utf8").split("\n").length, 3);
    writer.close();
    assert.throws(() => {
      writer.append({ step: 30 });
    }, (e) => isTunaError(e) && e.code === "INTERNAL");
  });
});

test("non-finite numbers survive the round trip as strings; undefined keys are left out", async () => {
  assert.equal(serializeLogEntry({ step: 1, loss: Number.NaN, grad_norm: Number.POSITIVE_INFINITY, x: Number.NEGATIVE_INFINITY, y: undefined }), '{"step":1,"loss":"NaN","grad_norm":"Infinity","x":"-Infinity"}');
  await withTempDir(async (dir) => {
    const path = join(dir, "metrics.jsonl");
    const writer = createMetricsJsonlWriter(path);
    writer.append({ step: 1, loss: Number.NaN, grad_norm: Number.POSITIVE_INFINITY, note: "ok", flag: true, nothing: null });
    writer.close();
    const { entries, tornLine } = await readMetricsJsonl(path);
    assert.equal(tornLine, undefined);
    assert.deepEqual(entries, [{ step: 1, loss: Number.NaN, grad_norm: Number.POSITIVE_INFINITY, note: "ok", flag: true, nothing: null }]);
  });
});

test("a torn last line (a crash mid-write) is dropped and reported; a complete one without newline is kept", () => {
  const good = '{"step":1,"loss":2}\n{"step":2,"loss":1.5}\n';
  assert.deepEqual(parseMetricsJsonl(good + '{"step":3,"lo', "m.jsonl"), {
    entries: [
      { step: 1, loss: 2 },
      { step: 2, loss: 1.5 },
    ],
    tornLine: '{"step":3,"lo',
  });
  assert.deepEqual(parseMetricsJsonl(good + '{"step":3,"loss":1}', "m.jsonl").entries.map((e) => e.step), [1, 2, 3]);
  assert.deepEqual(parseMetricsJsonl("", "m.jsonl"), { entries: [] });
  assert.deepEqual(parseMetricsJsonl("\n\n", "m.jsonl"), { entries: [] });
});

test("a bad line before the last is an error naming the file and line", () => {
  assert.throws(
    () => parseMetricsJsonl('{"step":1}\n{"step":2,"lo\n{"step":3}\n', "/x/metrics.jsonl"),
    (e) => isTunaError(e) && e.code === "FILE_FORMAT" && e.message.includes("/x/metrics.jsonl:2"),
  );
  assert.throws(() => parseMetricsJsonl('{"loss":1}\n', "m"), (e) => isTunaError(e) && e.message.includes("m:1"));
  assert.throws(() => parseMetricsJsonl('[1,2]\n', "m"), (e) => isTunaError(e) && e.code === "FILE_FORMAT");
});

test("a new run starts the file empty; resuming keeps entries up to the checkpoint step and drops a torn tail", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "metrics.jsonl");
    const first = createMetricsJsonlWriter(path);
    for (let step = 1; step <= 5; step++) first.append({ step, loss: 3 - step / 10 });
    first.close();
    appendFileSync(path, '{"step":6,"loss":2.');

    const resumed = createMetricsJsonlWriter(path, { resumeAtStep: 3 });
    resumed.append({ step: 4, loss: 9 });
    resumed.close();
    const { entries, tornLine } = await readMetricsJsonl(path);
    assert.equal(tornLine, undefined);
    assert.deepEqual(entries.map((e) => [e.step, e.loss]), [
      [1, 2.9],
      [2, 2.8],
      [3, 2.7],
      [4, 9],
    ]);
    assert.deepEqual(await readdir(dir), ["metrics.jsonl"]); // no staging file left behind

    const fresh = createMetricsJsonlWriter(path);
    fresh.close();
    assert.equal(readFileSync(path, "utf8"), "");
  });
});

test("resuming with no file yet just creates it; a missing file to read is FILE_NOT_FOUND", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "metrics.jsonl");
    const writer = createMetricsJsonlWriter(path, { resumeAtStep: 100 });
    writer.append({ step: 101 });
    writer.close();
    assert.deepEqual((await readMetricsJsonl(path)).entries, [{ step: 101 }]);
    await assert.rejects(readMetricsJsonl(join(dir, "none.jsonl")), (e) => isTunaError(e) && e.code === "FILE_NOT_FOUND");
    writeFileSync(join(dir, "file"), "");
    assert.throws(() => createMetricsJsonlWriter(join(dir, "file", "metrics.jsonl")), (e) => isTunaError(e) && e.code === "IO");
  });
});
