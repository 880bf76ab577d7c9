// Files written by pyarrow in HF datasets' layouts (test/data/fixtures/make_hf_fixtures.py, run on the GPU
// machine); expected.json holds the rows as Python wrote them, so the expected values are independent of tuna.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { loadDataset } from "../../../src/data/sources/load.ts";
import { readDataFile } from "../../../src/data/sources/file-rows.ts";

const FIXTURES = new URL("../fixtures/pyarrow/", import.meta.url).pathname;
const expected = (JSON.parse(readFileSync(`${FIXTURES}expected.json`, "utf8")) as { rows: Record<string, unknown[]> }).rows;

test("pyarrow DatasetDict save_to_disk folder (streams of several batches, two train shards)", async () => {
  const got = await loadDataset(`${FIXTURES}hf-dict`, { splits: ["train", "test"] });
  assert.deepEqual(got.get("train")!.rows, expected.train);
  assert.deepEqual(got.get("test")!.rows, expected.test);
  assert.deepEqual(got.get("train")!.columns, ["id", "messages", "score", "tags", "note"]);
});

test("pyarrow snappy Parquet in the push_to_hub layout data/{split}-00000-of-00001.parquet", async () => {
  const got = await loadDataset(`${FIXTURES}hf-repo`, { splits: ["train", "test"] });
  assert.deepEqual(got.get("train")!.rows, expected.train);
  assert.deepEqual(got.get("test")!.rows, expected.test);
});

test("pyarrow zstd Parquet; an int64 past 2^53 stays an exact bigint", async () => {
  const got = await readDataFile(`${FIXTURES}zstd.parquet`, { display: "zstd.parquet", skipBadRows: false });
  assert.deepEqual(got.rows, [
    { text: "a", big: 1 },
    { text: "b", big: 2n ** 60n },
  ]);
});
