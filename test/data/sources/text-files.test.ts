import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { readDataFile } from "../../../src/data/sources/file-rows.ts";
import { TunaError } from "../../../src/util/errors.ts";
import { withTempDir, writeText } from "./fixtures.ts";

const strict = (display: string) => ({ display, skipBadRows: false });

test("JSONL: one object per line, blank lines ignored, origins are 1-based lines", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "train.jsonl");
    await writeText(path, '{"text": "a", "n": 1}\n\n  \r\n{"text": "b", "extra": [1, 2]}\r\n');
    const got = await readDataFile(path, strict("data/train.jsonl"));
    assert.deepEqual(got.rows, [{ text: "a", n: 1 }, { text: "b", extra: [1, 2] }]);
    assert.deepEqual(got.origins, [
      { file: "data/train.jsonl", line: 1 },
      { file: "data/train.jsonl", line: 4 },
    ]);
    assert.deepEqual(got.columns, ["text", "n", "extra"]);
    assert.equal(got.skipped, 0);
  });
});

test("JSONL: a malformed line names file:line; with skipBadRows it is skipped and counted", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "train.jsonl");
    await writeText(path, '{"text": "a"}\n{"text": oops}\n[1, 2]\n{"text": "d"}\n');
    await assert.rejects(readDataFile(path, strict("train.jsonl")), (e: unknown) => {
      assert.ok(e instanceof TunaError);
      assert.equal(e.code, "FILE_FORMAT");
      assert.match(e.message, /^train\.jsonl:2: not valid JSON \(/);
      return true;
    });
    const got = await readDataFile(path, { display: "train.jsonl", skipBadRows: true });
    assert.deepEqual(got.rows, [{ text: "a" }, { text: "d" }]);
    assert.deepEqual(got.origins.map((o) => o.line), [1, 4]);
    assert.equal(got.skipped, 2); // the bad JSON and the array
  });
});

test("JSONL: a line that is JSON but not an object is a format error at its line", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "t.jsonl");
    await writeText(path, '{"a": 1}\n"just a string"\n');
    await assert.rejects(readDataFile(path, strict("t.jsonl")), /t\.jsonl:2: expected one JSON object per line, got a string/);
  });
});

test("JSON: array of rows, object of columns, and the rows under data/rows", async () => {
  await withTempDir(async (dir) => {
    const cases: [string, unknown][] = [
      ["array.json", [{ text: "x" }, { text: "y" }]],
      ["columns.json", { text: ["x", "y"] }],
      ["data.json", { version: 2, data: [{ text: "x" }, { text: "y" }] }],
      ["rows.json", { rows: [{ text: "x" }, { text: "y" }] }],
    ];
    for (const [name, content] of cases) {
      await writeText(join(dir, name), JSON.stringify(content));
      const got = await readDataFile(join(dir, name), strict(name));
      assert.deepEqual(got.rows, [{ text: "x" }, { text: "y" }], name);
      assert.deepEqual(got.origins, [{ file: name, row: 0 }, { file: name, row: 1 }], name);
      assert.deepEqual(got.columns, ["text"], name);
    }
  });
});

test("JSON: a .json file holding JSON Lines is read as JSON Lines (as HF's loader does)", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "lines.json");
    await writeText(path, '{"text": "x"}\n{"text": "y"}\n');
    const got = await readDataFile(path, strict("lines.json"));
    assert.deepEqual(got.rows, [{ text: "x" }, { text: "y" }]);
    assert.deepEqual(got.origins.map((o) => o.line), [1, 2]);
  });
});

test("JSON: shapes that hold no rows are reported with what was found and what is accepted", async () => {
  await withTempDir(async (dir) => {
    await writeText(join(dir, "a.json"), JSON.stringify({ text: ["x", "y"], label: ["only one"] }, null, 1));
    await assert.rejects(readDataFile(join(dir, "a.json"), strict("a.json")), (e: unknown) => {
      assert.ok(e instanceof TunaError && e.code === "FILE_FORMAT");
      assert.match(e.message, /a\.json: a JSON dataset must be an array of row objects/);
      assert.match(e.message, /found an object with keys text, label/);
      return true;
    });
    await writeText(join(dir, "b.json"), "42");
    await assert.rejects(readDataFile(join(dir, "b.json"), strict("b.json")), /found a number/);
    await writeText(join(dir, "c.json"), "{not json");
    await assert.rejects(readDataFile(join(dir, "c.json"), strict("c.json")), /c\.json: not valid JSON/);
    await writeText(join(dir, "d.json"), JSON.stringify([{ text: "x" }, "y"]));
    await assert.rejects(readDataFile(join(dir, "d.json"), strict("d.json")), /d\.json row 1: expected a JSON object, got a string/);
    const skipped = await readDataFile(join(dir, "d.json"), { display: "d.json", skipBadRows: true });
    assert.equal(skipped.rows.length, 1);
    assert.equal(skipped.skipped, 1);
  });
});

test("CSV: header row, values as strings, quoted fields, origins are the record's line", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "d.csv");
    await writeText(path, '\ufeffprompt,completion,n\n"Hi, you","multi\nline",3\n\nplain,x,4\n');
    const got = await readDataFile(path, strict("d.csv"));
    assert.deepEqual(got.columns, ["prompt", "completion", "n"]);
    assert.deepEqual(got.rows, [
      { prompt: "Hi, you", completion: "multi\nline", n: "3" },
      { prompt: "plain", completion: "x", n: "4" },
    ]);
    assert.deepEqual(got.origins, [
      { file: "d.csv", line: 3 },
      { file: "d.csv", line: 5 },
    ]);
  });
});

test("CSV: a record with the wrong number of fields fails with its line, or is skipped", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "d.csv");
    await writeText(path, "a,b\n1,2\n3,4,5\n6,7\n");
    await assert.rejects(readDataFile(path, strict("d.csv")), (e: unknown) => {
      assert.ok(e instanceof TunaError && e.code === "FILE_FORMAT");
      assert.match(e.message, /^d\.csv:3: not valid CSV/);
      return true;
    });
    const got = await readDataFile(path, { display: "d.csv", skipBadRows: true });
    assert.deepEqual(got.rows, [{ a: "1", b: "2" }, { a: "6", b: "7" }]);
    assert.equal(got.skipped, 1);
  });
});

test("CSV: duplicate header names and an empty file are errors", async () => {
  await withTempDir(async (dir) => {
    await writeText(join(dir, "dup.csv"), "a,a\n1,2\n");
    await assert.rejects(readDataFile(join(dir, "dup.csv"), strict("dup.csv")), /names column "a" twice/);
    await writeText(join(dir, "empty.csv"), "");
    await assert.rejects(readDataFile(join(dir, "empty.csv"), strict("empty.csv")), /empty; it needs a header row/);
  });
});

test("a missing file is FILE_NOT_FOUND and an unknown extension names the supported ones", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(readDataFile(join(dir, "nope.jsonl"), strict("nope.jsonl")), (e: unknown) => e instanceof TunaError && e.code === "FILE_NOT_FOUND");
    await writeText(join(dir, "x.txt"), "hello");
    await assert.rejects(readDataFile(join(dir, "x.txt"), strict("x.txt")), /\.jsonl, \.json, \.csv, \.parquet, \.arrow/);
  });
});

test("invalid UTF-8 is an error naming file, line and byte offset in JSONL, JSON and CSV; JSONL can skip such lines", async () => {
  await withTempDir(async (dir) => {
    const { writeFile } = await import("node:fs/promises");
    // Line 2 holds "caf\xe9" (latin-1), at byte 14 + 13 = 27 of the file; multi-byte UTF-8 before it is valid.
    const first = Buffer.from('{"text": "é"}\n'); // 15 bytes: é is 2 bytes
    const second = Buffer.concat([Buffer.from('{"text": "caf'), Buffer.from([0xe9]), Buffer.from('"}\n')]);
    const third = Buffer.from('{"text": "ok"}\n');
    const jsonlPath = join(dir, "t.jsonl");
    await writeFile(jsonlPath, Buffer.concat([first, second, third]));
    const badOffset = first.length + 13;
    const expectMessage = (display: string, line: number) => (e: unknown): boolean => {
      assert.ok(e instanceof TunaError, String(e));
      assert.equal(e.code, "FILE_FORMAT");
      assert.match(e.message, new RegExp(`^${display.replace(".", "\\.")}:${line}: invalid UTF-8 at byte offset ${badOffset} \\(byte 0xe9\\)`));
      return true;
    };
    await assert.rejects(readDataFile(jsonlPath, strict("t.jsonl")), expectMessage("t.jsonl", 2));
    const skipped = await readDataFile(jsonlPath, { display: "t.jsonl", skipBadRows: true });
    assert.deepEqual(skipped.rows, [{ text: "é" }, { text: "ok" }]);
    assert.equal(skipped.skipped, 1);
    assert.deepEqual(skipped.origins.map((o) => o.line), [1, 3]);

    const jsonPath = join(dir, "t.json");
    await writeFile(jsonPath, Buffer.concat([Buffer.from("[\n"), Buffer.from('{"text": "é"},'), Buffer.from('\n{"text": "caf'), Buffer.from([0xe9]), Buffer.from('"}]\n')]));
    await assert.rejects(readDataFile(jsonPath, strict("t.json")), (e: unknown) => e instanceof TunaError && /^t\.json:3: invalid UTF-8 at byte offset 31 /.test(e.message));

    const csvPath = join(dir, "t.csv");
    await writeFile(csvPath, Buffer.concat([Buffer.from("text\nfine\ncaf"), Buffer.from([0xe9]), Buffer.from("\n")]));
    await assert.rejects(readDataFile(csvPath, strict("t.csv")), (e: unknown) => e instanceof TunaError && /^t\.csv:3: invalid UTF-8 at byte offset 13 /.test(e.message));

    // A truncated multi-byte sequence and an encoded surrogate are invalid too; a BOM and 4-byte characters are fine.
    await writeFile(jsonlPath, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"text": "😀"}\n{"text": "'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}\n')]));
    await assert.rejects(readDataFile(jsonlPath, strict("t.jsonl")), (e: unknown) => e instanceof TunaError && /^t\.jsonl:2: invalid UTF-8 at byte offset 30 \(byte 0xed\)/.test(e.message));
    await writeFile(jsonlPath, Buffer.concat([Buffer.from('{"text": "😀"}\n{"text": "'), Buffer.from([0xe2, 0x82])]));
    await assert.rejects(readDataFile(jsonlPath, strict("t.jsonl")), (e: unknown) => e instanceof TunaError && /^t\.jsonl:2: invalid UTF-8 at byte offset 27 \(byte 0xe2\)/.test(e.message));
  });
});

test("JSONL: lines split across read chunks are joined (a 3 MB line between short ones)", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "big.jsonl");
    const long = "é".repeat(1_500_000);
    await writeText(path, `{"n": 1}\n{"text": "${long}"}\n{"n": 3}`);
    const got = await readDataFile(path, strict("big.jsonl"));
    assert.deepEqual(got.rows.map((r) => r.n ?? (r.text as string).length), [1, 1_500_000, 3]);
    assert.deepEqual(got.origins.map((o) => o.line), [1, 2, 3]);
  });
});
