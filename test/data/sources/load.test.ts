import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { holdOutTestSplit, loadDataset } from "../../../src/data/sources/load.ts";
import type { SplitRows } from "../../../src/data/types.ts";
import { TunaError } from "../../../src/util/errors.ts";
import { createRng } from "../../../src/util/random.ts";
import { chatRows, withTempDir, writeDatasetFolder, writeText } from "./fixtures.ts";

const FIXTURES = new URL("../fixtures/pyarrow/", import.meta.url).pathname;

function isTuna(code: string, pattern: RegExp) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof TunaError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, pattern);
    return true;
  };
}

const jsonl = (rows: object[]): string => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";

test("a single local file is one split, train", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "mine.jsonl");
    await writeText(path, jsonl([{ text: "a" }, { text: "b", id: 2 }]));
    const got = await loadDataset(path, { splits: ["train"] });
    const train = got.get("train")!;
    assert.equal(train.split, "train");
    // Rows lacking a column get null, as in an Arrow table.
    assert.deepEqual(train.rows, [{ text: "a", id: null }, { text: "b", id: 2 }]);
    assert.deepEqual(train.columns, ["text", "id"]);
    assert.deepEqual(train.origins[1], { file: path, line: 2 });
  });
});

test("a folder of data files: hub split rules, exactly the requested splits in the requested order", async () => {
  await withTempDir(async (dir) => {
    await writeText(join(dir, "ds", "train.jsonl"), jsonl([{ text: "t1" }, { text: "t2" }]));
    await writeText(join(dir, "ds", "test.jsonl"), jsonl([{ text: "e1" }]));
    await writeText(join(dir, "ds", "validation.jsonl"), jsonl([{ text: "v1" }]));
    await writeText(join(dir, "ds", "README.md"), "# hi");
    const got = await loadDataset(join(dir, "ds"), { splits: ["test", "train"] });
    assert.deepEqual([...got.keys()], ["test", "train"]);
    assert.deepEqual(got.get("test")!.rows, [{ text: "e1" }]);
    assert.deepEqual(got.get("train")!.rows.map((r) => r.text), ["t1", "t2"]);
    assert.equal(got.get("train")!.origins[0]!.file, join(dir, "ds", "train.jsonl"));
  });
});

test("a DatasetDict save_to_disk folder: dataset_dict.json, <split>/state.json, arrow shards in state order", async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, "saved");
    const first = chatRows("train", 3, 0);
    const second = chatRows("train", 2, 3);
    await writeDatasetFolder(join(root, "train"), [first, second], null);
    await writeDatasetFolder(join(root, "test"), [chatRows("test", 2, 100)], null);
    await writeFile(join(root, "dataset_dict.json"), JSON.stringify({ splits: ["train", "test"] }));
    const got = await loadDataset(root, { splits: ["train", "test"] });
    const train = got.get("train")!;
    assert.deepEqual(train.columns, ["id", "messages", "score"]);
    assert.deepEqual(train.rows.map((r) => r.id), [0, 1, 2, 3, 4]);
    assert.deepEqual(train.rows[4], { id: 4, messages: second[1]!.messages, score: 2 });
    assert.deepEqual(train.origins[3], { file: join(root, "train", "data-00001-of-00002.arrow"), row: 0 });
    assert.deepEqual(got.get("test")!.rows.map((r) => r.id), [100, 101]);

    // Rows follow state.json's _data_files order, not the file names.
    const statePath = join(root, "train", "state.json");
    const state = JSON.parse(await readFile(statePath, "utf8")) as { _data_files: unknown[] };
    state._data_files.reverse();
    await writeFile(statePath, JSON.stringify(state));
    const reordered = await loadDataset(root, { splits: ["train"] });
    assert.deepEqual(reordered.get("train")!.rows.map((r) => r.id), [3, 4, 0, 1, 2]);
  });
});

test("a single Dataset folder is train unless state.json's _split says otherwise", async () => {
  await withTempDir(async (dir) => {
    await writeDatasetFolder(join(dir, "plain"), [chatRows("x", 2)], null);
    assert.deepEqual([...(await loadDataset(join(dir, "plain"), { splits: ["train"] })).keys()], ["train"]);
    await writeDatasetFolder(join(dir, "named"), [chatRows("x", 2)], "test");
    const got = await loadDataset(join(dir, "named"), { splits: ["test"] });
    assert.equal(got.get("test")!.rows.length, 2);
  });
});

test("the seed's load_from_disk(name/split) form: one Dataset folder per split", async () => {
  await withTempDir(async (dir) => {
    await writeDatasetFolder(join(dir, "name", "train"), [chatRows("tr", 3)], "train");
    await writeDatasetFolder(join(dir, "name", "test"), [chatRows("te", 1, 50)], "test");
    const got = await loadDataset(join(dir, "name"), { splits: ["train", "test"] });
    assert.deepEqual(got.get("train")!.rows.map((r) => r.id), [0, 1, 2]);
    assert.deepEqual(got.get("test")!.rows.map((r) => r.id), [50]);
  });
});

test("a hub id resolves through the HF cache (offline here) and then follows the folder rules", async () => {
  await withTempDir(async (dir) => {
    const commit = "0123456789abcdef0123456789abcdef01234567";
    const storage = join(dir, "hub", "datasets--tuna-test--chat");
    await mkdir(join(storage, "refs"), { recursive: true });
    await writeFile(join(storage, "refs", "main"), commit);
    const snapshot = join(storage, "snapshots", commit, "data");
    await mkdir(snapshot, { recursive: true });
    await copyFile(join(FIXTURES, "hf-repo", "data", "train-00000-of-00001.parquet"), join(snapshot, "train-00000-of-00001.parquet"));
    const env = { HF_HUB_OFFLINE: "1", HF_HUB_CACHE: join(dir, "hub") };
    const got = await loadDataset("tuna-test/chat", { splits: ["train"], env });
    const train = got.get("train")!;
    assert.equal(train.rows.length, 5);
    assert.deepEqual(train.origins[0], { file: "hf://datasets/tuna-test/chat/data/train-00000-of-00001.parquet", row: 0 });
    await assert.rejects(loadDataset("tuna-test/other", { splits: ["train"], env }), (e: unknown) => e instanceof TunaError && e.code === "HUB");
  });
});

test("a missing split is CONFIG_INVALID naming the available splits", async () => {
  await withTempDir(async (dir) => {
    await writeText(join(dir, "ds", "train.jsonl"), jsonl([{ text: "a" }]));
    await writeText(join(dir, "ds", "validation.jsonl"), jsonl([{ text: "b" }]));
    await assert.rejects(
      loadDataset(join(dir, "ds"), { splits: ["train", "test"] }),
      isTuna("CONFIG_INVALID", /has no split "test"; its splits are: train, validation/),
    );
    await writeText(join(dir, "only", "train.jsonl"), jsonl([{ text: "a" }]));
    // With only train, the message points at the hold-out option.
    await assert.rejects(loadDataset(join(dir, "only"), { splits: ["test"] }), isTuna("CONFIG_INVALID", /test split ratio above 0/));
  });
});

test("an empty split is CONFIG_INVALID naming the split and its files", async () => {
  await withTempDir(async (dir) => {
    await writeText(join(dir, "ds", "train.jsonl"), jsonl([{ text: "a" }]));
    await writeText(join(dir, "ds", "test.jsonl"), "\n\n");
    await assert.rejects(
      loadDataset(join(dir, "ds"), { splits: ["train", "test"] }),
      isTuna("CONFIG_INVALID", new RegExp(`split "test" of dataset .* is empty \\(files: ${join(dir, "ds", "test.jsonl")}\\)`)),
    );
  });
});

test("skipBadRows: malformed JSONL rows are skipped and counted per split", async () => {
  await withTempDir(async (dir) => {
    await writeText(join(dir, "d.jsonl"), '{"text": "a"}\nnot json\n{"text": "c"}\n');
    await assert.rejects(loadDataset(join(dir, "d.jsonl"), { splits: ["train"] }), isTuna("FILE_FORMAT", /d\.jsonl:2: not valid JSON/));
    const got = await loadDataset(join(dir, "d.jsonl"), { splits: ["train"], skipBadRows: true });
    assert.equal(got.get("train")!.skipped, 1);
    assert.equal(got.get("train")!.rows.length, 2);
  });
});

// The documented algorithm, written out: Fisher-Yates from the last index, j = floor(uniform * (i + 1)).
function expectedOrder(n: number, seed: number): number[] {
  const rng = createRng(seed);
  const order = [...Array(n).keys()];
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

test("only train + test requested + testSplitRatio: a deterministic seeded hold-out of ceil(n * ratio) rows", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "d.jsonl");
    await writeText(path, jsonl(Array.from({ length: 10 }, (_, i) => ({ i }))));
    const load = (seed: number) => loadDataset(path, { splits: ["train", "test"], testSplitRatio: 0.25, seed });
    const got = await load(7);
    const ids = (s: SplitRows | undefined) => s!.rows.map((r) => r.i as number);
    const order = expectedOrder(10, 7);
    assert.deepEqual(ids(got.get("test")), order.slice(0, 3)); // ceil(2.5) = 3
    assert.deepEqual(ids(got.get("train")), order.slice(3));
    assert.deepEqual(got.get("test")!.origins.map((o) => o.line), order.slice(0, 3).map((i) => i + 1));
    assert.deepEqual([...ids(got.get("train")), ...ids(got.get("test"))].sort((a, b) => a - b), [...Array(10).keys()]);
    // Same seed -> same split; another seed -> another split.
    assert.deepEqual(ids((await load(7)).get("test")), ids(got.get("test")));
    assert.notDeepEqual(ids((await load(8)).get("test")), ids(got.get("test")));
    // Default seed 42; only test requested still works.
    const onlyTest = await loadDataset(path, { splits: ["test"], testSplitRatio: 0.25 });
    assert.deepEqual([...onlyTest.keys()], ["test"]);
    assert.deepEqual(ids(onlyTest.get("test")), expectedOrder(10, 42).slice(0, 3));
  });
});

test("the hold-out refuses a ratio that leaves no training rows, and bad ratios", async () => {
  const one: SplitRows = { split: "train", rows: [{ a: 1 }], origins: [{ file: "f", line: 1 }], files: ["f"], columns: ["a"], skipped: 0 };
  assert.throws(() => holdOutTestSplit(one, 0.1, 1), /leaving none to train on/);
  await assert.rejects(loadDataset("whatever", { splits: ["train"], testSplitRatio: 1 }), isTuna("CONFIG_INVALID", /at least 0 and below 1/));
  await assert.rejects(loadDataset("whatever", { splits: [] }), isTuna("CONFIG_INVALID", /no dataset splits/));
});

test("a path that does not exist is FILE_NOT_FOUND, never a hub lookup", async () => {
  await assert.rejects(loadDataset("./no/such/folder", { splits: ["train"] }), isTuna("FILE_NOT_FOUND", /does not exist/));
});
