// Tests of openSafetensors: files produced by the reference writer, every validation error on
// hand-crafted files, and that reading one tensor reads only that tensor's bytes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { open, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { openSafetensors } from "../../../src/io/safetensors/reader.ts";
import { craftBytes, craftFile, rejectsWith, withTmpDir } from "./fixtures.ts";

const f32Bytes = (values: number[]): Uint8Array => new Uint8Array(new Float32Array(values).buffer);

// Byte vectors from huggingface/safetensors tests (safetensors/src/tensor.rs, test_serialization and
// test_serialization_forced_alignement): files written by the reference Rust writer.
const RUST_UNPADDED = Uint8Array.from([
  64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34, 58, 34, 70, 51,
  50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102,
  115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0,
  128, 64, 0, 0, 160, 64,
]);
const RUST_PADDED = Uint8Array.from([
  72, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 48, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34, 58, 34, 70, 51, 50,
  34, 44, 34, 115, 104, 97, 112, 101, 34, 58, 91, 49, 44, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102,
  102, 115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 32, 32, 32, 32, 32, 32, 32, 0, 0, 0, 0, 0, 0, 128, 63,
  0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64,
]);

void test("reads files written by the reference writer, padded and unpadded", async () => {
  await withTmpDir(async (dir) => {
    for (const [name, bytes, tensor, shape, headerLength] of [
      ["unpadded.safetensors", RUST_UNPADDED, "attn.0", [1, 2, 3], 64],
      ["padded.safetensors", RUST_PADDED, "attn0", [1, 1, 2, 3], 72],
    ] as const) {
      const path = join(dir, name);
      await writeFile(path, bytes);
      const file = await openSafetensors(path);
      assert.equal(file.metadata, undefined);
      assert.deepEqual([...file.tensors.keys()], [tensor]);
      assert.deepEqual(file.tensors.get(tensor), { name: tensor, dtype: "F32", shape: [...shape], byteOffset: 8 + headerLength, byteLength: 24 });
      assert.deepEqual(await file.readTensor(tensor), f32Bytes([0, 1, 2, 3, 4, 5]));
      await file.close();
    }
  });
});

void test("lists tensors in offset order whatever the header order, with metadata, scalars and empty tensors", async () => {
  await withTmpDir(async (dir) => {
    const header =
      `{"b":{"dtype":"F32","shape":[],"data_offsets":[4,8]},"__metadata__":{"format":"pt","k":"v"},` +
      `"e":{"dtype":"BF16","shape":[0,5],"data_offsets":[8,8]},"a":{"dtype":"U8","shape":[2,2],"data_offsets":[0,4]}}    `;
    const path = await craftFile(dir, "x.safetensors", header, Uint8Array.from([1, 2, 3, 4, 0, 0, 128, 63]));
    const file = await openSafetensors(path);
    assert.deepEqual(file.metadata, { format: "pt", k: "v" });
    assert.deepEqual([...file.tensors.keys()], ["a", "b", "e"]);
    const dataStart = 8 + new TextEncoder().encode(header).length;
    assert.equal(file.tensors.get("b")?.byteOffset, dataStart + 4);
    assert.deepEqual(await file.readTensor("a"), Uint8Array.from([1, 2, 3, 4]));
    assert.deepEqual(await file.readTensor("b"), f32Bytes([1]));
    assert.deepEqual(await file.readTensor("e"), new Uint8Array(0));
    await rejectsWith(file.readTensor("nope"), "MODEL_INVALID", "nope", path);
    await file.close();
  });
});

void test("accepts an empty header object", async () => {
  await withTmpDir(async (dir) => {
    const file = await openSafetensors(await craftFile(dir, "e.safetensors", "{}      "));
    assert.equal(file.tensors.size, 0);
    await file.close();
  });
});

void test("a missing file is FILE_NOT_FOUND", async () => {
  await withTmpDir(async (dir) => {
    const path = join(dir, "absent.safetensors");
    await rejectsWith(openSafetensors(path), "FILE_NOT_FOUND", path);
  });
});

const T4 = (name: string, begin: number, end: number): string =>
  `"${name}":{"dtype":"F32","shape":[1],"data_offsets":[${begin},${end}]}`;

interface BadCase {
  what: string;
  bytes: Uint8Array;
  fragment: string;
}

const BAD: BadCase[] = [
  { what: "shorter than 8 bytes", bytes: Uint8Array.from([1, 0, 0, 0, 0]), fragment: "fewer than the 8-byte" },
  { what: "header too large", bytes: craftBytes("{}", undefined, 100_000_001n), fragment: "exceeds the limit" },
  { what: "header length past end", bytes: craftBytes("{}", undefined, 1000n), fragment: "runs past the end" },
  { what: "huge u64 header length", bytes: craftBytes("{}", undefined, 0xffffffffffffffffn), fragment: "exceeds the limit" },
  { what: "not UTF-8", bytes: craftBytes(Uint8Array.from([0x7b, 0xff, 0x7d])), fragment: "UTF-8" },
  { what: "not JSON", bytes: craftBytes("{abc}"), fragment: "not valid JSON" },
  { what: "not an object", bytes: craftBytes("[1,2]"), fragment: "does not start with '{'" },
  { what: "leading space", bytes: craftBytes(" {}"), fragment: "does not start with '{'" },
  { what: "empty header", bytes: craftBytes(""), fragment: "does not start with '{'" },
  { what: "byte-order mark", bytes: craftBytes(Uint8Array.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d])), fragment: "does not start with '{'" },
  { what: "metadata not an object", bytes: craftBytes(`{"__metadata__":"pt"}`), fragment: "__metadata__" },
  { what: "metadata value not a string", bytes: craftBytes(`{"__metadata__":{"format":1}}`), fragment: "must be strings" },
  { what: "metadata null", bytes: craftBytes(`{"__metadata__":null}`), fragment: "__metadata__" },
  { what: "entry not an object", bytes: craftBytes(`{"a":[1]}`), fragment: `tensor "a"` },
  { what: "unknown dtype", bytes: craftBytes(`{"a":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}`, new Uint8Array(4)), fragment: `unknown dtype "F12"` },
  { what: "dtype lowercase", bytes: craftBytes(`{"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}`, new Uint8Array(4)), fragment: "unknown dtype" },
  { what: "negative dim", bytes: craftBytes(`{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}`), fragment: "non-negative integers" },
  { what: "fractional dim", bytes: craftBytes(`{"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,0]}}`), fragment: "non-negative integers" },
  { what: "string dim", bytes: craftBytes(`{"a":{"dtype":"U8","shape":["1"],"data_offsets":[0,1]}}`, new Uint8Array(1)), fragment: "non-negative integers" },
  { what: "unsafe dim", bytes: craftBytes(`{"a":{"dtype":"U8","shape":[9007199254740993],"data_offsets":[0,0]}}`), fragment: "non-negative integers" },
  { what: "shape missing", bytes: craftBytes(`{"a":{"dtype":"U8","data_offsets":[0,0]}}`), fragment: "shape" },
  { what: "offsets reversed", bytes: craftBytes(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}`), fragment: "data_offsets [4,0]" },
  { what: "offsets one number", bytes: craftBytes(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[0]}}`), fragment: "data_offsets" },
  { what: "offsets strings", bytes: craftBytes(`{"a":{"dtype":"U8","shape":[1],"data_offsets":["0","1"]}}`, new Uint8Array(1)), fragment: "data_offsets" },
  { what: "size mismatch", bytes: craftBytes(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, new Uint8Array(4)), fragment: "needs 8 bytes" },
  { what: "sub-byte not whole bytes", bytes: craftBytes(`{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}`, new Uint8Array(1)), fragment: "whole number of bytes" },
  { what: "hole", bytes: craftBytes(`{${T4("a", 0, 4)},${T4("b", 8, 12)}}`, new Uint8Array(12)), fragment: "a hole of 4 bytes" },
  { what: "overlap", bytes: craftBytes(`{${T4("a", 0, 4)},${T4("b", 2, 6)},${T4("c", 6, 10)}}`, new Uint8Array(10)), fragment: "an overlap of 2 bytes" },
  { what: "not starting at 0", bytes: craftBytes(`{${T4("a", 4, 8)}}`, new Uint8Array(8)), fragment: "starts at data offset 4" },
  { what: "truncated data", bytes: craftBytes(`{${T4("a", 0, 4)},${T4("b", 4, 8)}}`, new Uint8Array(6)), fragment: "truncated by 2 bytes" },
  { what: "trailing bytes", bytes: craftBytes(`{${T4("a", 0, 4)}}`, new Uint8Array(7)), fragment: "3 trailing bytes" },
  // Both entries are consistent, so JSON.parse alone (which keeps the last) would accept the file.
  { what: "duplicate tensor", bytes: craftBytes(`{${T4("a", 0, 4)},${T4("a", 0, 4)}}`, new Uint8Array(4)), fragment: `"a" appears twice` },
  { what: "duplicate via escape", bytes: craftBytes(`{${T4("a", 0, 4)},${T4("\\u0061", 0, 4)}}`, new Uint8Array(4)), fragment: `"a" appears twice` },
  { what: "duplicate field", bytes: craftBytes(`{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, new Uint8Array(1)), fragment: `"dtype" appears twice in the entry "a"` },
];

void test("rejects every malformed file with FILE_FORMAT naming the file", async () => {
  await withTmpDir(async (dir) => {
    for (const [i, c] of BAD.entries()) {
      const path = join(dir, `bad-${i}.safetensors`);
      await writeFile(path, c.bytes);
      await rejectsWith(openSafetensors(path), "FILE_FORMAT", path, c.fragment, "re-download").catch((e: unknown) => {
        throw new Error(`case "${c.what}": ${(e as Error).message}`);
      });
    }
  });
});

void test("duplicate detection is not fooled by quotes and braces inside strings", async () => {
  await withTmpDir(async (dir) => {
    const header = `{"__metadata__":{"x":"a\\"b{,}\\\\","y":"\\"a\\"","__proto__":"p"},${T4('q\\"a', 0, 4)},${T4("a", 4, 8)}}`;
    const file = await openSafetensors(await craftFile(dir, "q.safetensors", header, new Uint8Array(8)));
    assert.deepEqual([...file.tensors.keys()], ['q"a', "a"]);
    // A "__proto__" key stays an ordinary metadata entry.
    assert.deepEqual(file.metadata, Object.fromEntries([["x", 'a"b{,}\\'], ["y", '"a"'], ["__proto__", "p"]]));
    await file.close();
  });
});

void test("a tensor cut off after opening is a FILE_FORMAT error on read", async () => {
  await withTmpDir(async (dir) => {
    const path = await craftFile(dir, "t.safetensors", `{${T4("a", 0, 4)},${T4("b", 4, 8)}}`, new Uint8Array(8));
    const file = await openSafetensors(path);
    const dataStart = file.tensors.get("a")!.byteOffset;
    await truncate(path, dataStart + 6);
    assert.equal((await file.readTensor("a")).length, 4);
    await rejectsWith(file.readTensor("b"), "FILE_FORMAT", path, `tensor "b"`, "truncated");
    await file.close();
  });
});

void test("opening and reading one small tensor of a 200 MB file reads only a few bytes", async () => {
  await withTmpDir(async (dir) => {
    const big = 200_000_000;
    const header = `{"big":{"dtype":"U8","shape":[${big}],"data_offsets":[0,${big}]},"small":{"dtype":"F32","shape":[4],"data_offsets":[${big},${big + 16}]}}`;
    const path = await craftFile(dir, "big.safetensors", header);
    const dataStart = 8 + header.length;
    await truncate(path, dataStart + big); // sparse: no data blocks are written
    const fh = await open(path, "r+");
    await fh.write(f32Bytes([1, 2, 3, 4]), 0, 16, dataStart + big);
    await fh.close();

    // Spy on every read made through a FileHandle (the reader's positional reads included).
    const probe = await open(path, "r");
    const handleProto = Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => Promise<{ bytesRead: number }> };
    await probe.close();
    const originalRead = handleProto.read;
    let bytesRead = 0;
    handleProto.read = async function (this: unknown, ...args: unknown[]) {
      const result = await originalRead.apply(this, args);
      bytesRead += result.bytesRead;
      return result;
    };
    try {
      const before = process.memoryUsage().arrayBuffers;
      const started = performance.now();
      const file = await openSafetensors(path);
      const small = await file.readTensor("small");
      const elapsedMs = performance.now() - started;
      await file.close();
      assert.deepEqual(small, f32Bytes([1, 2, 3, 4]));
      assert.equal(bytesRead, 8 + header.length + 16, "only the length, the header and the tensor are read");
      assert.ok(process.memoryUsage().arrayBuffers - before < 10_000_000);
      assert.ok(elapsedMs < 500, `took ${elapsedMs} ms`);
    } finally {
      handleProto.read = originalRead;
    }
  });
});
