// The CPU tensor store: alloc, upload/download in storage form and as float32, fill, copy between dtypes,
// rows and view sharing storage, free (views die with their storage), and loud errors for misuse.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createCpuBackend } from "../../../src/backend/cpu/index.ts";
import { assertInternal, backend, tensorOf } from "./helpers.ts";

const be = backend();

void test("alloc zero-fills and describes the tensor; upload/download round-trip each dtype", async () => {
  const t = be.alloc("f32", [2, 3], "w");
  assert.deepEqual([t.dtype, [...t.shape], t.size, t.name], ["f32", [2, 3], 6, "w"]);
  assert.deepEqual(await be.download(t), new Float32Array(6));
  const cases = [
    ["f32", Float32Array.from([1.5, -2])],
    ["bf16", Uint16Array.from([0x3fc0, 0xc000])],
    ["f16", Uint16Array.from([0x3e00, 0xc000])],
    ["i32", Int32Array.from([7, -9])],
    ["u8", Uint8Array.from([0, 255])],
  ] as const;
  for (const [dtype, data] of cases) {
    const x = be.alloc(dtype, [2]);
    be.upload(x, data);
    assert.deepEqual(await be.download(x), data);
    assert.deepEqual(Array.from(await be.downloadF32(x)), Array.from(data, Number).map((v, i) => (dtype === "bf16" || dtype === "f16" ? [1.5, -2][i]! : v)));
  }
  assertInternal(() => { be.upload(t, new Float32Array(5)); }, "takes a Float32Array of 6, got a Float32Array of 5");
  assertInternal(() => { be.upload(be.alloc("bf16", [2]), new Float32Array(2)); }, "takes a Uint16Array of 2");
  assertInternal(() => be.alloc("f32", [2, -1]), "not a non-negative integer");
});

void test("download returns a copy the caller owns", async () => {
  const t = tensorOf(be, [2], Float32Array.from([1, 2]));
  const copy = await be.download(t);
  copy[0] = 99;
  assert.deepEqual(await be.downloadF32(t), Float32Array.from([1, 2]));
});

void test("fill rounds to the dtype; copy converts between float dtypes with rounding", async () => {
  const b = be.alloc("bf16", [3]);
  be.fill(b, 1 / 3);
  assert.deepEqual(await be.download(b), Uint16Array.from([0x3eab, 0x3eab, 0x3eab]));
  const i = be.alloc("i32", [2]);
  be.fill(i, -100);
  assert.deepEqual(await be.download(i), Int32Array.from([-100, -100]));
  assertInternal(() => { be.fill(i, 0.5); }, "0.5 is not an i32 value");
  const f = tensorOf(be, [3], Float32Array.from([1 + 2 ** -8, 1 + 3 * 2 ** -8, -0.1]));
  be.copy(b, f);
  // Ties go to even: 1 + 2^-8 -> 1, 1 + 3*2^-8 -> 1 + 2^-6.
  assert.deepEqual(Array.from(await be.downloadF32(b)), [1, 1 + 2 ** -6, -0.10009765625]);
  assertInternal(() => { be.copy(i, f); }, "shape [2] does not match [3]");
  assertInternal(() => { be.copy(be.alloc("i32", [3]), f); }, "only float dtypes convert");
});

void test("rows and view share storage with their tensor", async () => {
  const t = tensorOf(be, [4, 2], Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]));
  const middle = be.rows(t, 1, 2);
  assert.deepEqual([...middle.shape], [2, 2]);
  assert.deepEqual(Array.from(await be.downloadF32(middle)), [2, 3, 4, 5]);
  be.fill(middle, -1);
  const flat = be.view(t, [8]);
  assert.deepEqual(Array.from(await be.downloadF32(flat)), [0, 1, -1, -1, -1, -1, 6, 7]);
  const inner = be.rows(be.view(t, [2, 4]), 1, 1);
  be.scale(inner, 2);
  assert.deepEqual(Array.from(await be.downloadF32(t)), [0, 1, -1, -1, -2, -2, 12, 14]);
  assertInternal(() => be.rows(t, 3, 2), "rows [3, 5) are not inside");
  assertInternal(() => be.view(t, [3, 3]), "shape [3, 3] has 9 elements");
});

void test("free releases a tensor and the views of its storage; stale and foreign handles are rejected", () => {
  const t = be.alloc("f32", [4, 2], "acts");
  const v = be.rows(t, 0, 1);
  const w = be.view(t, [8]);
  be.free(v);
  be.fill(w, 1); // the storage outlives a freed view
  be.free(t);
  assertInternal(() => { be.fill(w, 1); }, "fill:", "is not a live tensor of this backend");
  assertInternal(() => { be.free(t); }, "free:", "acts");
  const other = createCpuBackend({ threads: 1 }).alloc("f32", [1]);
  assertInternal(() => { be.fill(other, 0); }, "is not a live tensor of this backend");
});

void test("a multi-threaded backend keeps the same semantics over shared storage", async () => {
  const mt = backend(2);
  const t = tensorOf(mt, [2, 2], Float32Array.from([1, 2, 3, 4]));
  mt.fill(mt.rows(t, 1, 1), 0);
  assert.deepEqual(Array.from(await mt.downloadF32(t)), [1, 2, 0, 0]);
  const copy = await mt.download(t);
  assert.ok(!(copy.buffer instanceof SharedArrayBuffer));
});
