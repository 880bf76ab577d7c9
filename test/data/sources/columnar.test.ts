import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Field, Int32, List, Table, Utf8, tableToIPC, vectorFromArray } from "apache-arrow";
import { parquetWriteBuffer } from "hyparquet-writer";
import { readDataFile } from "../../../src/data/sources/file-rows.ts";
import { TunaError } from "../../../src/util/errors.ts";
import { chatArrowStream, chatRows, withTempDir } from "./fixtures.ts";

const read = (path: string, display: string) => readDataFile(path, { display, skipBadRows: false });

test("Parquet: nested list<struct>, int64, lists and nulls come back as plain JS", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "train-00000-of-00001.parquet");
    const messages = [
      [
        { role: "user", content: "hi" },
        { role: "assistant", content: "yo" },
      ],
      [{ role: "user", content: "x" }],
      [],
    ];
    // The 3-level LIST layout pyarrow writes for list<struct<role, content>>; snappy (the writer's default).
    const buffer = parquetWriteBuffer({
      columnData: [
        { name: "id", data: [1n, 2n, 2n ** 60n] },
        { name: "text", data: ["a", null, "c"] },
        { name: "messages", data: messages },
        { name: "ids", data: [[1, 2, 3], [4], []] },
      ],
      schema: [
        { name: "root", num_children: 4 },
        { name: "id", type: "INT64", repetition_type: "OPTIONAL" },
        { name: "text", type: "BYTE_ARRAY", converted_type: "UTF8", repetition_type: "OPTIONAL" },
        { name: "messages", repetition_type: "OPTIONAL", converted_type: "LIST", num_children: 1 },
        { name: "list", repetition_type: "REPEATED", num_children: 1 },
        { name: "element", repetition_type: "OPTIONAL", num_children: 2 },
        { name: "role", type: "BYTE_ARRAY", converted_type: "UTF8", repetition_type: "OPTIONAL" },
        { name: "content", type: "BYTE_ARRAY", converted_type: "UTF8", repetition_type: "OPTIONAL" },
        { name: "ids", repetition_type: "OPTIONAL", converted_type: "LIST", num_children: 1 },
        { name: "list", repetition_type: "REPEATED", num_children: 1 },
        { name: "element", type: "INT32", repetition_type: "OPTIONAL" },
      ],
    });
    await writeFile(path, new Uint8Array(buffer));
    const got = await read(path, "data/train-00000-of-00001.parquet");
    assert.deepEqual(got.columns, ["id", "text", "messages", "ids"]);
    assert.deepEqual(got.rows, [
      { id: 1, text: "a", messages: messages[0], ids: [1, 2, 3] },
      { id: 2, text: null, messages: messages[1], ids: [4] },
      // 2^60 is not exactly representable as a number, so it stays a bigint.
      { id: 2n ** 60n, text: "c", messages: [], ids: [] },
    ]);
    assert.deepEqual(got.origins[2], { file: "data/train-00000-of-00001.parquet", row: 2 });
  });
});

test("Arrow IPC stream with HF metadata and several record batches: rows in order, structs as objects", async () => {
  await withTempDir(async (dir) => {
    const rows = chatRows("s", 5);
    const path = join(dir, "data-00000-of-00001.arrow");
    await writeFile(path, chatArrowStream(rows, 2)); // batches of 2, 2, 1
    const got = await read(path, "data-00000-of-00001.arrow");
    assert.deepEqual(got.columns, ["id", "messages", "score"]);
    assert.deepEqual(
      got.rows,
      rows.map((r) => ({ id: r.id, messages: r.messages, score: r.score })),
    );
    assert.deepEqual(got.origins.map((o) => o.row), [0, 1, 2, 3, 4]);
  });
});

test("Arrow IPC file format (with the ARROW1 footer) is read too", async () => {
  await withTempDir(async (dir) => {
    const table = new Table({
      text: vectorFromArray(["p", "q"], new Utf8()),
      ids: vectorFromArray([[1, 2], [3]], new List(new Field("item", new Int32(), true))),
    });
    const path = join(dir, "x.arrow");
    await writeFile(path, tableToIPC(table, "file"));
    const got = await read(path, "x.arrow");
    assert.deepEqual(got.rows, [
      { text: "p", ids: [1, 2] },
      { text: "q", ids: [3] },
    ]);
  });
});

test("a corrupt Parquet or Arrow file is FILE_FORMAT naming the file", async () => {
  await withTempDir(async (dir) => {
    await writeFile(join(dir, "bad.parquet"), "definitely not parquet");
    await assert.rejects(read(join(dir, "bad.parquet"), "bad.parquet"), (e: unknown) => {
      assert.ok(e instanceof TunaError && e.code === "FILE_FORMAT");
      assert.match(e.message, /^bad\.parquet: not a readable Parquet file/);
      return true;
    });
    await writeFile(join(dir, "bad.arrow"), "nope");
    await assert.rejects(read(join(dir, "bad.arrow"), "bad.arrow"), /bad\.arrow: not a readable Arrow IPC file/);
    await assert.rejects(read(join(dir, "missing.parquet"), "missing.parquet"), (e: unknown) => e instanceof TunaError && e.code === "FILE_NOT_FOUND");
  });
});
