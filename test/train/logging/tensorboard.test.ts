import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { readFileSync, statSync } from "node:fs";
import { homedir, hostname, tmpdir } from "node:os";
import { basename, join } from "node:path";
import {
  createTensorBoardWriter,
  defaultLoggingDir,
  encodeFileVersionEvent,
  encodeScalarEvent,
  eventFileName,
  frameRecord,
  resolveLoggingDir,
  tensorBoardTag,
} from "../../../src/train/logging/tensorboard.ts";
import { isTunaError } from "../../../src/util/errors.ts";
import { SAMPLE_EVENTS_FILE, TORCH_EVENTS_FILE, loadSampleRun, writeSampleEvents } from "./fixtures/sample-events.ts";
import { decodeEvent, hex, readEvents, readRecords } from "./tfevents-reader.ts";

async function withTempDir(body: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "tuna-tb-test-"));
  try {
    await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test("encodes the spec's worked example byte for byte (scalar and file_version records)", () => {
  const scalarData = hex("09 00 00 20 40 fc 54 d9 41 10 0a 2a 13 0a 11 0a 0a 74 72 61 69 6e 2f 6c 6f 73 73 15 00 00 a0 3f");
  const data = encodeScalarEvent("train/loss", 1.25, 10, 1700000000.5);
  assert.deepEqual(data, scalarData);
  assert.deepEqual(frameRecord(data), hex(`20 00 00 00 00 00 00 00 29 ed a9 50 ${Buffer.from(scalarData).toString("hex").replace(/(..)/g, "$1 ")} 14 7a 6d ef`));

  const versionData = hex("09 00 00 20 40 fc 54 d9 41 1a 0d 62 72 61 69 6e 2e 45 76 65 6e 74 3a 32");
  assert.deepEqual(encodeFileVersionEvent(1700000000.5), versionData);
  assert.deepEqual(frameRecord(versionData).subarray(0, 12), hex("18 00 00 00 00 00 00 00 a3 7f 4b 22"));
  assert.deepEqual(frameRecord(versionData).subarray(36), hex("2b 35 31 10"));
});

test("a step of 0 is left off the wire, a value of 0 is not (simple_value is in a oneof)", () => {
  const event = decodeEvent(encodeScalarEvent("t", 0, 0, 5));
  assert.deepEqual(event.fieldOrder, [1, 5]);
  assert.equal(event.values[0]?.simpleValue, 0);
});

test("event file names follow tensorboard's EventFileWriter", () => {
  assert.equal(eventFileName(1700000000.9, "box", 4242, 0), "events.out.tfevents.1700000000.box.4242.0");
  assert.equal(eventFileName(12.5, "h", 7, 3, ".extra"), "events.out.tfevents.0000000012.h.7.3.extra");
});

test("log keys become HF's TensorBoard tags (rewrite_logs)", () => {
  // transformers 5.17.0 on the GPU machine: rewrite_logs({"loss", "eval_loss", "test_acc", "epoch"})
  // -> {'train/loss', 'eval/loss', 'test/acc', 'train/epoch'}
  assert.equal(tensorBoardTag("loss"), "train/loss");
  assert.equal(tensorBoardTag("eval_loss"), "eval/loss");
  assert.equal(tensorBoardTag("test_acc"), "test/acc");
  assert.equal(tensorBoardTag("epoch"), "train/epoch");
  assert.equal(tensorBoardTag("train_runtime"), "train/train_runtime");
});

test("the default logging dir is <output_dir>/runs/<Mon><DD>_<HH>-<MM>-<SS>_<host> in local time", () => {
  assert.equal(defaultLoggingDir("out", new Date(2024, 0, 5, 7, 8, 9), "box"), join("out", "runs", "Jan05_07-08-09_box"));
  assert.equal(defaultLoggingDir("/o", new Date(2023, 11, 31, 23, 59, 0), "h"), join("/o", "runs", "Dec31_23-59-00_h"));
});

test("TENSORBOARD_LOGGING_DIR overrides the default, as in transformers 5.x", () => {
  const date = new Date(2024, 5, 1, 0, 0, 0);
  assert.equal(resolveLoggingDir("out", {}, date, "h"), join("out", "runs", "Jun01_00-00-00_h"));
  assert.equal(resolveLoggingDir("out", { TENSORBOARD_LOGGING_DIR: "" }, date, "h"), join("out", "runs", "Jun01_00-00-00_h"));
  assert.equal(resolveLoggingDir("out", { TENSORBOARD_LOGGING_DIR: "/tb/run1" }, date, "h"), "/tb/run1");
  assert.equal(resolveLoggingDir("out", { TENSORBOARD_LOGGING_DIR: "~/tb" }, date, "h"), join(homedir(), "tb"));
});

test("a written file reads back with the exact tags, steps, values and wall times", async () => {
  await withTempDir(async (root) => {
    const logDir = join(root, "runs", "x"); // created by the writer
    let clock = 1700000100.75;
    const writer = createTensorBoardWriter(logDir, { clock: () => clock, filenameSuffix: ".v2" });
    assert.match(basename(writer.path), new RegExp(`^events\\.out\\.tfevents\\.1700000100\\.${hostname().replace(/\./g, "\\.")}\\.${process.pid}\\.\\d+\\.v2$`));
    writer.addText("args", '{"lr": 0.0002}', 0);
    clock += 1;
    writer.addScalar("train/loss", 2.75, 1);
    writer.addScalar("train/learning_rate", 1e-4, 1, 1700000200.125);
    writer.addScalar("train/grad_norm", Number.NaN, 2);
    writer.addScalar("weird/negative_step", -3.5, -7);
    const skipped = writer.addLogs({ step: 3, loss: 1.5, eval_loss: 1.25, note: "hello", nested: { a: 1 }, flag: true }, 3);
    assert.deepEqual(skipped, ["nested"]);
    writer.close();

    const events = readEvents(await readFile(writer.path));
    assert.equal(events[0]?.fileVersion, "brain.Event:2");
    assert.equal(events[0].wallTime, 1700000100.75);
    const rest = events.slice(1).map((e) => ({ step: e.step, wallTime: e.wallTime, values: e.values }));
    assert.deepEqual(rest, [
      { step: 0n, wallTime: 1700000100.75, values: [{ tag: "args/text_summary", tensor: { dtype: 7, shape: [1], strings: ['{"lr": 0.0002}'] }, pluginName: "text" }] },
      { step: 1n, wallTime: 1700000101.75, values: [{ tag: "train/loss", simpleValue: 2.75 }] },
      { step: 1n, wallTime: 1700000200.125, values: [{ tag: "train/learning_rate", simpleValue: Math.fround(1e-4) }] },
      { step: 2n, wallTime: 1700000101.75, values: [{ tag: "train/grad_norm", simpleValue: Number.NaN }] },
      { step: -7n, wallTime: 1700000101.75, values: [{ tag: "weird/negative_step", simpleValue: -3.5 }] },
      { step: 3n, wallTime: 1700000101.75, values: [{ tag: "train/loss", simpleValue: 1.5 }] },
      { step: 3n, wallTime: 1700000101.75, values: [{ tag: "eval/loss", simpleValue: 1.25 }] },
      { step: 3n, wallTime: 1700000101.75, values: [{ tag: "train/note/text_summary", tensor: { dtype: 7, shape: [1], strings: ["hello"] }, pluginName: "text" }] },
      { step: 3n, wallTime: 1700000101.75, values: [{ tag: "train/flag", simpleValue: 1 }] },
    ]);
  });
});

test("events are queued until flush, a full queue, or close; the file_version record is written at once", async () => {
  await withTempDir((dir) => {
    let clock = 1000;
    const writer = createTensorBoardWriter(dir, { clock: () => clock, maxQueue: 3, flushSecs: 60 });
    const recordsOnDisk = (): number => readRecords(readFileSync(writer.path)).length;
    assert.equal(recordsOnDisk(), 1);
    writer.addScalar("a", 1, 1);
    writer.addScalar("a", 2, 2);
    assert.equal(recordsOnDisk(), 1);
    writer.addScalar("a", 3, 3); // third queued event fills the queue
    assert.equal(recordsOnDisk(), 4);
    writer.addScalar("a", 4, 4);
    clock += 61; // the next add finds the last write too old
    writer.addScalar("a", 5, 5);
    assert.equal(recordsOnDisk(), 6);
    writer.addScalar("a", 6, 6);
    writer.flush();
    assert.equal(recordsOnDisk(), 7);
    writer.close();
    writer.close(); // idempotent
    assert.throws(() => {
      writer.addScalar("a", 7, 7);
    }, (e) => isTunaError(e) && e.code === "INTERNAL");
    assert.throws(() => createTensorBoardWriter(join(writer.path, "sub")), (e) => isTunaError(e) && e.code === "IO" && e.message.includes(writer.path));
  });
});

test("steps must be integers", async () => {
  await withTempDir(async (dir) => {
    const writer = createTensorBoardWriter(dir);
    assert.throws(() => {
      writer.addScalar("a", 1, 1.5);
    }, (e) => isTunaError(e) && e.code === "INTERNAL" && e.message.includes("1.5"));
    writer.close();
    assert.equal((await readdir(dir)).length, 1);
  });
});

// The committed sample file, read on the GPU machine (tensorboard 2.21.0, torch 2.11.0+cu130,
// transformers 5.17.0) with test/train/logging/fixtures/check_tfevents.py:
//   records with valid masked CRCs (tensorboard's masked_crc32c): 19
//   EventAccumulator Tags: scalars ['train/loss', 'train/grad_norm', 'train/learning_rate', 'train/epoch',
//     'eval/loss', 'eval/perplexity', 'train/train_runtime', 'train/train_loss', 'train/total_flos'],
//     tensors ['args/text_summary']
//   Scalars('train/loss'): [(2, 2.5, 1700000002.25), (4, 2.125, 1700000003.5), (6, 1.875, 1700000006.0)]
//   Scalars('train/learning_rate'): [(2, 0.00019999999494757503, ...), (4, 0.00013333333481568843, ...),
//     (6, 6.666666740784422e-05, ...)]
//   Scalars('train/epoch'): [(2, 0.33000001311302185), (4, 0.6700000166893005), (6, 1.0)]
//   Scalars('eval/perplexity'): [(4, 7.864999771118164)];  Scalars('train/total_flos'): [(6, 0.0)]
//   Tensors('args/text_summary'): plugin text, step 0, wall 1700000001.0, dtype 7, shape [1], the JSON text
//   TensorBoard server (fast loading): /data/plugin/scalars/scalars?run=.&tag=train/loss ->
//     [[1700000002.25, 2, 2.5], [1700000003.5, 4, 2.125], [1700000006.0, 6, 1.875]]; the text plugin
//     shows args/text_summary.
//   torch.utils.tensorboard.SummaryWriter making the same calls: records 1-18 byte-identical to
//   tuna's; record 0 differs only in wall_time and torch's source_metadata field.
test("the committed sample file is what the writer produces today", async () => {
  await withTempDir(async (dir) => {
    const run = loadSampleRun();
    const writer = createTensorBoardWriter(dir, { clock: () => run.createdSec });
    writeSampleEvents(writer, run);
    writer.close();
    assert.deepEqual(await readFile(writer.path), await readFile(SAMPLE_EVENTS_FILE));
  });
});

test("the sample file decodes to the sample run, with float32 values as TensorBoard reported them", async () => {
  const run = loadSampleRun();
  const events = readEvents(await readFile(SAMPLE_EVENTS_FILE));
  assert.equal(events.length, run.events.length + 1);
  events.slice(1).forEach((e, i) => {
    const expected = run.events[i]!;
    assert.equal(e.step, BigInt(expected.step));
    assert.equal(e.wallTime, expected.wallTimeSec);
    const tag = expected.kind === "text" ? `${expected.tag}/text_summary` : expected.tag;
    assert.equal(e.values[0]?.tag, tag);
    if (expected.kind === "scalar") assert.equal(e.values[0].simpleValue, Math.fround(expected.value));
    else assert.deepEqual(e.values[0].tensor?.strings, [expected.text]);
  });
  // The numbers TensorBoard's EventAccumulator printed on the GPU machine.
  const lr = events.filter((e) => e.values[0]?.tag === "train/learning_rate").map((e) => e.values[0]?.simpleValue);
  assert.deepEqual(lr, [0.00019999999494757503, 0.00013333333481568843, 6.666666740784422e-5]);
  const perplexity = events.find((e) => e.values[0]?.tag === "eval/perplexity")?.values[0]?.simpleValue;
  assert.equal(perplexity, 7.864999771118164);
});

test("records after the first are byte-identical to torch's SummaryWriter for the same calls", async () => {
  const ours = readRecords(await readFile(SAMPLE_EVENTS_FILE));
  const torch = readRecords(await readFile(TORCH_EVENTS_FILE));
  assert.equal(torch.length, ours.length);
  for (let i = 1; i < ours.length; i++) assert.deepEqual(ours[i], torch[i], `record ${i}`);
  const torchFirst = decodeEvent(torch[0]!);
  assert.equal(torchFirst.fileVersion, "brain.Event:2");
  assert.equal(torchFirst.sourceWriter, "tensorboard.summary.writer.event_file_writer");
  assert.ok(statSync(TORCH_EVENTS_FILE).size > 0);
});
