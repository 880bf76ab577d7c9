import { test } from "node:test";
import assert from "node:assert/strict";
import { splitsFromDataFiles } from "../../../src/data/sources/hub-splits.ts";
import { TunaError } from "../../../src/util/errors.ts";

const asObject = (files: string[]): Record<string, string[]> => Object.fromEntries(splitsFromDataFiles(files));

test("rule 1: data/{split}-NNNNN-of-NNNNN shards; train, validation, test first, then the others sorted", () => {
  const got = splitsFromDataFiles([
    "README.md",
    "data/zeta-00000-of-00001.parquet",
    "data/test-00000-of-00001.parquet",
    "data/train-00001-of-00002.parquet",
    "data/train-00000-of-00002.parquet",
    "data/alpha-00000-of-00001.parquet",
    "data/validation-00000-of-00001.parquet",
  ]);
  assert.deepEqual([...got.keys()], ["train", "validation", "test", "alpha", "zeta"]);
  assert.deepEqual(got.get("train"), ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]);
});

test("rule 1 wins over keywords elsewhere, and a shard suffix after the counts is allowed", () => {
  assert.deepEqual(asObject(["data/train-00000-of-00001-abc123.parquet", "test/x.parquet"]), {
    train: ["data/train-00000-of-00001-abc123.parquet"],
  });
});

test("rule 1: a split name outside \\w+(\\.\\w+)* is an error naming the file", () => {
  assert.throws(
    () => splitsFromDataFiles(["data/my-train-00000-of-00001.parquet"]),
    (e: unknown) => e instanceof TunaError && /data\/my-train-00000-of-00001\.parquet: "my-train" is not a valid split name/.test(e.message),
  );
});

test("rule 3: split keywords as directory names, with the separator class -._ space digits", () => {
  assert.deepEqual(
    asObject([
      "train/a.jsonl",
      "training_v2/b.jsonl",
      "my-dev/c.jsonl",
      "x/2eval3/d.jsonl",
      "pretrain/e.jsonl", // "pretrain" is no keyword match (no separator before "train")
      "notes/f.jsonl", // matches no split: dropped
    ]),
    {
      train: ["train/a.jsonl", "training_v2/b.jsonl"],
      validation: ["my-dev/c.jsonl"],
      test: ["x/2eval3/d.jsonl"],
    },
  );
});

test("rule 3: the hub's parquet conversion layout default/train/0000.parquet", () => {
  assert.deepEqual(asObject(["default/train/0000.parquet", "default/train/0001.parquet", "default/test/0000.parquet"]), {
    train: ["default/train/0000.parquet", "default/train/0001.parquet"],
    test: ["default/test/0000.parquet"],
  });
});

test("rule 4: split keywords in file names", () => {
  assert.deepEqual(
    asObject(["train.jsonl", "my_test.jsonl", "dev-1.jsonl", "valid.jsonl", "evaluation.json", "sub/eval.jsonl", "attest.jsonl", "trains.jsonl"]),
    {
      train: ["train.jsonl"],
      // Files come pattern by pattern, keywords in the hub's order (valid before dev, eval before evaluation).
      validation: ["valid.jsonl", "dev-1.jsonl"],
      test: ["my_test.jsonl", "sub/eval.jsonl", "evaluation.json"],
    },
  );
});

test("rule 5: no keyword anywhere -> every file is train; ignored names are left out", () => {
  assert.deepEqual(asObject(["a.jsonl", "b/c.jsonl", "dataset_info.json", "dataset_dict.json", "config.json"]), {
    train: ["a.jsonl", "b/c.jsonl"],
  });
});

test("only the most common format is read (.json and .jsonl are one format); a split left empty is dropped", () => {
  assert.deepEqual(asObject(["train-1.parquet", "train-2.parquet", "test.csv"]), { train: ["train-1.parquet", "train-2.parquet"] });
  assert.deepEqual(asObject(["train.jsonl", "test.json"]), { train: ["train.jsonl"], test: ["test.json"] });
});
