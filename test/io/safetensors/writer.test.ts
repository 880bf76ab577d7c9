// Tests of the safetensors writer: exact header bytes derived by hand from the reference writer's
// rules, round trips of every dtype, metadata, validation, streaming and atomic replacement.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { SAFETENSORS_DTYPES, dtypeBits, isSafetensorsDtype, type SafetensorsDtype } from "../../../src/io/safetensors/dtypes.ts";
import { openSafetensors } from "../../../src/io/safetensors/reader.ts";
import {
  writeSafetensors,
  writeSafetensorsStreaming,
  type TensorSpec,
  type TensorToWrite,
} from "../../../src/io/safetensors/writer.ts";
import { patternBytes, rejectsWith, withTmpDir } from "./fixtures.ts";

void test("the dtype list is the reference enum order with the reference sizes", () => {
  assert.deepEqual(SAFETENSORS_DTYPES, [
    "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ",
    "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64",
  ]);
  assert.deepEqual(
    SAFETENSORS_DTYPES.map(dtypeBits),
    [8, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 16, 16, 16, 16, 32, 32, 32, 64, 64, 64, 64],
  );
  assert.equal(isSafetensorsDtype("BF16"), true);
  assert.equal(isSafetensorsDtype("bf16"), false);
  assert.equal(isSafetensorsDtype("__proto__"), false);
});

void test("writes the exact bytes of the reference writer", async () => {
  await withTmpDir(async (dir) => {
    const path = join(dir, "small.safetensors");
    const b = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
    const c = Uint8Array.from([9, 10, 11, 12]);
    const a = Uint8Array.from([13, 14, 15, 16, 17, 18]);
    const a0 = Uint8Array.from([19, 20, 21, 22, 23, 24, 25, 26]);
    await writeSafetensors(path, [
      { name: "b", dtype: "F32", shape: [2], data: b },
      { name: "a", dtype: "F16", shape: [3], data: a },
      { name: "zz", dtype: "U8", shape: [0], data: new Uint8Array(0) },
      { name: "c", dtype: "F32", shape: [], data: c },
      { name: "a.0", dtype: "I64", shape: [1], data: a0 },
    ]);
    // By hand: dtype descending in enum order (I64, F32, F16, U8), then name; offsets contiguous from 0;
    // compact JSON with __metadata__ first; 305 bytes of JSON padded with 7 spaces to 312.
    const json =
      `{"__metadata__":{"format":"pt"},` +
      `"a.0":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},` +
      `"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},` +
      `"c":{"dtype":"F32","shape":[],"data_offsets":[16,20]},` +
      `"a":{"dtype":"F16","shape":[3],"data_offsets":[20,26]},` +
      `"zz":{"dtype":"U8","shape":[0],"data_offsets":[26,26]}}`;
    assert.equal(json.length, 305);
    const expected = new Uint8Array(8 + 312 + 26);
    expected.set([56, 1, 0, 0, 0, 0, 0, 0], 0); // 312 = 0x138, little-endian
    expected.set(new TextEncoder().encode(json + "       "), 8);
    expected.set(a0, 320);
    expected.set(b, 328);
    expected.set(c, 336);
    expected.set(a, 340);
    assert.deepEqual(new Uint8Array(await readFile(path)), expected);
  });
});

void test("names sort by UTF-8 bytes, as Rust's String order", async () => {
  await withTmpDir(async (dir) => {
    const path = join(dir, "names.safetensors");
    const one = (name: string): TensorToWrite => ({ name, dtype: "U8", shape: [1], data: Uint8Array.from([name.length]) });
    // UTF-8: "B" 42 < "a" 61 < U+FFFF (EF BF BF) < U+10000 (F0 90 80 80); UTF-16 order would put U+10000 first.
    await writeSafetensors(path, [one("\u{10000}"), one("\uffff"), one("a"), one("B")]);
    const file = await openSafetensors(path);
    assert.deepEqual([...file.tensors.keys()], ["B", "a", "\uffff", "\u{10000}"]);
    await file.close();
  });
});

function shapeFor(dtype: SafetensorsDtype): number[] {
  // Sub-byte dtypes need a whole number of bytes: 6 x 4 bits = 3 bytes, 4 x 6 bits = 3 bytes.
  const bits = dtypeBits(dtype);
  return bits === 4 ? [2, 3] : bits === 6 ? [4] : [2, 3];
}

void test("every dtype round-trips byte for byte, each aligned to its element size", async () => {
  await withTmpDir(async (dir) => {
    const path = join(dir, "all.safetensors");
    const tensors: TensorToWrite[] = SAFETENSORS_DTYPES.map((dtype, i) => {
      const shape = shapeFor(dtype);
      const bytes = (shape.reduce((x, y) => x * y, 1) * dtypeBits(dtype)) / 8;
      return { name: `t.${dtype.toLowerCase()}`, dtype, shape, data: patternBytes(bytes, i + 1) };
    });
    await writeSafetensors(path, tensors, { note: "all dtypes" });
    const file = await openSafetensors(path);
    assert.deepEqual(file.metadata, { format: "pt", note: "all dtypes" });
    assert.equal(file.tensors.size, tensors.length);
    for (const t of tensors) {
      const info = file.tensors.get(t.name);
      assert.ok(info, t.name);
      assert.equal(info.dtype, t.dtype);
      assert.deepEqual(info.shape, t.shape);
      assert.equal(info.byteLength, t.data.length);
      if (dtypeBits(t.dtype) >= 8) assert.equal(info.byteOffset % (dtypeBits(t.dtype) / 8), 0, `${t.name} aligned`);
      assert.deepEqual(await file.readTensor(t.name), t.data);
    }
    await file.close();
  });
});

void test("metadata keeps format pt and rejects another format", async () => {
  await withTmpDir(async (dir) => {
    const path = join(dir, "m.safetensors");
    await writeSafetensors(path, [], { format: "pt", step: "10" });
    const file = await openSafetensors(path);
    assert.deepEqual(file.metadata, { format: "pt", step: "10" });
    await file.close();
    await rejectsWith(writeSafetensors(path, [], { format: "tf" }), "INTERNAL", `"format" must be "pt"`);
  });
});

void test("invalid tensors are rejected before any file is created", async () => {
  await withTmpDir(async (dir) => {
    const path = join(dir, "bad.safetensors");
    const ok: TensorToWrite = { name: "w", dtype: "F32", shape: [2], data: new Uint8Array(8) };
    await rejectsWith(writeSafetensors(path, [ok, { ...ok }]), "INTERNAL", `"w"`, "twice");
    await rejectsWith(writeSafetensors(path, [{ ...ok, data: new Uint8Array(7) }]), "INTERNAL", `"w"`, "needs 8 bytes", "has 7");
    await rejectsWith(writeSafetensors(path, [{ name: "q", dtype: "F4", shape: [3], data: new Uint8Array(2) }]), "INTERNAL", "whole number of bytes");
    await rejectsWith(writeSafetensors(path, [{ ...ok, shape: [-2] }]), "INTERNAL", "non-negative");
    await rejectsWith(writeSafetensors(path, [{ ...ok, name: "__metadata__" }]), "INTERNAL", "reserved");
    await rejectsWith(writeSafetensors(path, [{ ...ok, dtype: "F12" as SafetensorsDtype }]), "INTERNAL", "unknown dtype");
    assert.deepEqual(await readdir(dir), []);
  });
});

void test("a missing folder is FILE_NOT_FOUND", async () => {
  await withTmpDir(async (dir) => {
    await rejectsWith(writeSafetensors(join(dir, "no", "x.safetensors"), []), "FILE_NOT_FOUND", join(dir, "no"));
  });
});

void test("an existing file is replaced and no temporary file is left", async () => {
  await withTmpDir(async (dir) => {
    const path = join(dir, "r.safetensors");
    await writeFile(path, "old content");
    await writeSafetensors(path, [{ name: "x", dtype: "U8", shape: [1], data: Uint8Array.from([7]) }]);
    assert.deepEqual(await readdir(dir), ["r.safetensors"]);
    const file = await openSafetensors(path);
    assert.deepEqual(await file.readTensor("x"), Uint8Array.from([7]));
    await file.close();
  });
});

void test("while a file is being written the previous one is intact (a crash at any moment leaves it)", async () => {
  await withTmpDir(async (dir) => {
    const path = join(dir, "adapter_model.safetensors");
    await writeSafetensors(path, [{ name: "old", dtype: "U8", shape: [3], data: Uint8Array.from([1, 2, 3]) }]);
    const before = await readFile(path);
    const specs: TensorSpec[] = [
      { name: "a", dtype: "U8", shape: [4] },
      { name: "b", dtype: "U8", shape: [4] },
    ];
    const seenMidway: Buffer[] = [];
    await writeSafetensorsStreaming(path, specs, async (spec) => {
      // Between tensors: what a crash now would leave at the final path.
      seenMidway.push(await readFile(path));
      return Uint8Array.from([1, 2, 3, 4].map((v) => v + (spec.name === "b" ? 10 : 0)));
    });
    assert.equal(seenMidway.length, 2);
    for (const seen of seenMidway) assert.deepEqual(seen, before);
    const file = await openSafetensors(path);
    assert.deepEqual(await file.readTensor("b"), Uint8Array.from([11, 12, 13, 14]));
    await file.close();
  });
});

void test("streaming writes the same bytes, producing each tensor once in file order", async () => {
  await withTmpDir(async (dir) => {
    const tensors: TensorToWrite[] = [
      { name: "small", dtype: "BF16", shape: [2, 2], data: patternBytes(8, 1) },
      { name: "big", dtype: "F32", shape: [3], data: patternBytes(12, 2) },
      { name: "ids", dtype: "I64", shape: [2], data: patternBytes(16, 3) },
      { name: "mask", dtype: "BOOL", shape: [3], data: Uint8Array.from([1, 0, 1]) },
    ];
    const inMemory = join(dir, "a.safetensors");
    const streamed = join(dir, "b.safetensors");
    await writeSafetensors(inMemory, tensors);
    const specs: TensorSpec[] = tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape }));
    const produced: string[] = [];
    await writeSafetensorsStreaming(streamed, specs, (spec) => {
      produced.push(spec.name);
      const t = tensors.find((x) => x.name === spec.name);
      return Promise.resolve(t?.data ?? new Uint8Array(0));
    });
    assert.deepEqual(produced, ["ids", "big", "small", "mask"]); // I64, F32, BF16, BOOL
    assert.deepEqual(await readFile(streamed), await readFile(inMemory));
  });
});

void test("a failing or wrong-sized producer leaves no file behind", async () => {
  await withTmpDir(async (dir) => {
    const path = join(dir, "s.safetensors");
    const specs: TensorSpec[] = [{ name: "x", dtype: "F16", shape: [4] }];
    await rejectsWith(writeSafetensorsStreaming(path, specs, () => Promise.resolve(new Uint8Array(6))), "INTERNAL", `"x"`, "needs 8 bytes");
    await assert.rejects(writeSafetensorsStreaming(path, specs, () => Promise.reject(new Error("boom"))), /boom/);
    assert.deepEqual(await readdir(dir), []);
  });
});
