// Files written by Hugging Face `datasets` 5.0.1 itself (test/data/fixtures/make_datasets_fixtures.py, run with the
// CPU machine's local wheel): save_to_disk folders of a DatasetDict (one and two shards) and of one Dataset,
// push_to_hub's Parquet layout and to_json's JSON Lines. expected.json holds the rows as `datasets` reads them back,
// so the expected values do not come from tuna. Features: int64, a list of {role, content} structs, float32, a
// list of strings, a nullable string, a ClassLabel (its integer, as datasets returns it) and a bool.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { loadDataset } from "../../../src/data/sources/load.ts";

const FIXTURES = new URL("../fixtures/datasets/", import.meta.url).pathname;
const golden = JSON.parse(readFileSync(`${FIXTURES}expected.json`, "utf8")) as { datasets: string; rows: Record<string, Record<string, unknown>[]> };
const COLUMNS = ["id", "messages", "score", "tags", "note", "label", "flag"];

for (const [layout, what] of [
  ["dict", "DatasetDict.save_to_disk"],
  ["dict-sharded", "DatasetDict.save_to_disk with num_shards 2 for train"],
  ["repo", "to_parquet in push_to_hub's data/{split}-00000-of-00001.parquet layout"],
  ["jsonl", "to_json (JSON Lines, one file per split)"],
] as const) {
  test(`datasets ${golden.datasets} ${what}: every row as datasets reads it`, async () => {
    const got = await loadDataset(`${FIXTURES}${layout}`, { splits: ["train", "test"] });
    for (const split of ["train", "test"]) {
      const rows = got.get(split)!.rows;
      assert.equal(rows.length, golden.rows[split]!.length, `${layout} ${split}`);
      // float32 0.25 steps are exact; JSON has no float32, so compare values, not bit patterns.
      assert.deepEqual(rows, golden.rows[split], `${layout} ${split}`);
      assert.deepEqual(Object.keys(rows[0]!), COLUMNS, `${layout} ${split} columns`);
    }
  });
}

test(`datasets ${golden.datasets} Dataset.save_to_disk (one split, no dataset_dict.json): read as the train split`, async () => {
  const got = await loadDataset(`${FIXTURES}single`, { splits: ["train"] });
  assert.deepEqual(got.get("train")!.rows, golden.rows["train"]);
});
