// Elementwise ops against float64 formulas: add (with aliasing), scale, dropout, SwiGLU, bias; bf16 storage;
// central differences for the SwiGLU, dropout and bias backwards; accumulate flags add rather than overwrite.
import { test } from "node:test";
import assert from "node:assert/strict";
import { bf16BitsToF32, f32ToBf16Bits } from "../../../src/util/half.ts";
import { assertInternal, assertUlps, backend, checkGradient, project, randn, randnBf16, rng, tensorOf } from "./helpers.ts";

const be = backend();
const r = rng(51);
const silu = (g: number): number => g / (1 + Math.exp(-g));

void test("add sums elementwise, also into one of its inputs, and rounds bf16 outputs from the f32 sum", async () => {
  const av = randn(r, 12);
  const bv = randn(r, 12);
  const a = tensorOf(be, [3, 4], av);
  const b = tensorOf(be, [3, 4], bv);
  const out = be.alloc("f32", [3, 4]);
  be.add(out, a, b);
  assertUlps(await be.downloadF32(out), av.map((x, i) => x + bv[i]!), 0.5, "add");
  be.add(a, a, b);
  assertUlps(await be.downloadF32(a), av.map((x, i) => x + bv[i]!), 0.5, "add into a");
  // Mixed: bf16 a (the values av rounds to) plus f32 b into bf16 out = bf16(f32(a + b)).
  const a16 = tensorOf(be, [3, 4], av, "bf16");
  const a16Values = await be.downloadF32(a16);
  const o16 = be.alloc("bf16", [3, 4]);
  be.add(o16, a16, b);
  assert.deepEqual(await be.download(o16), Uint16Array.from(a16Values, (x, i) => f32ToBf16Bits(x + bv[i]!)));
  assertInternal(() => { be.add(out, a, be.alloc("f32", [4, 3])); }, "add: b shape [4, 3] does not match [3, 4]");
  assertInternal(() => { be.add(be.rows(a, 1, 2), be.rows(a, 0, 2), be.rows(a, 0, 2)); }, "shares storage", "may only be exactly the same tensor");
});

void test("scale multiplies in place by the float32-rounded scalar", async () => {
  const xv = randn(r, 7);
  const x = tensorOf(be, [7], xv);
  be.scale(x, 0.1);
  assertUlps(await be.downloadF32(x), xv.map((v) => v * Math.fround(0.1)), 0.5, "scale");
});

void test("dropoutApply keeps masked-in elements scaled by 1/(1-p), zeroes the rest, copies for p = 0", async () => {
  const xv = randn(r, 8);
  const maskBits = Uint8Array.from([1, 0, 1, 1, 0, 0, 1, 0]);
  const mask = be.alloc("u8", [8]);
  be.upload(mask, maskBits);
  const out = be.alloc("f32", [8]);
  be.dropoutApply(out, tensorOf(be, [8], xv), mask, 0.25);
  assertUlps(await be.downloadF32(out), xv.map((v, i) => (maskBits[i] === 1 ? v * Math.fround(1 / 0.75) : 0)), 0.5, "dropout");
  be.dropoutApply(out, tensorOf(be, [8], xv), mask, 0);
  assert.deepEqual(await be.downloadF32(out), xv);
  const bad = be.alloc("u8", [8]);
  be.fill(bad, 2);
  assertInternal(() => { be.dropoutApply(out, tensorOf(be, [8], xv), bad, 0.5); }, "mask element 0 is 2");
  assertInternal(() => { be.dropoutApply(out, tensorOf(be, [8], xv), mask, 1); }, "p is 1, expected 0 <= p < 1");
});

void test("dropout's backward (the same op on dout) matches central differences", async () => {
  const xv = randn(r, 6);
  const R = randn(r, 6);
  const mask = be.alloc("u8", [6]);
  be.upload(mask, Uint8Array.from([1, 1, 0, 1, 0, 1]));
  const dx = be.alloc("f32", [6]);
  be.dropoutApply(dx, tensorOf(be, [6], R), mask, 0.4);
  await checkGradient("x", xv, await be.downloadF32(dx), async (v) => {
    const out = be.alloc("f32", [6]);
    be.dropoutApply(out, tensorOf(be, [6], v), mask, 0.4);
    return project(await be.downloadF32(out), R);
  });
});

void test("swigluForward is silu(gate) * up, and bf16 storage rounds the f32 result", async () => {
  const gv = randn(r, 15, 3);
  const uv = randn(r, 15);
  const out = be.alloc("f32", [3, 5]);
  be.swigluForward(out, tensorOf(be, [3, 5], gv), tensorOf(be, [3, 5], uv));
  assertUlps(await be.downloadF32(out), gv.map((g, i) => silu(g) * uv[i]!), 0.5, "swiglu");
  const g16 = randnBf16(r, 15, 3);
  const u16 = randnBf16(r, 15);
  const a = be.alloc("f32", [3, 5]);
  const b = be.alloc("bf16", [3, 5]);
  be.swigluForward(a, tensorOf(be, [3, 5], g16), tensorOf(be, [3, 5], u16));
  be.swigluForward(b, tensorOf(be, [3, 5], g16, "bf16"), tensorOf(be, [3, 5], u16, "bf16"));
  assert.deepEqual(await be.download(b), Uint16Array.from(await be.downloadF32(a), (v) => f32ToBf16Bits(v)));
});

void test("swigluBackward is the product rule with silu'(g) = sig(g) + g sig(g) (1 - sig(g))", async () => {
  const gv = randn(r, 20, 4);
  const uv = randn(r, 20);
  const dv = randn(r, 20);
  const dgate = be.alloc("f32", [4, 5]);
  const dup = be.alloc("f32", [4, 5]);
  be.swigluBackward(dgate, dup, tensorOf(be, [4, 5], dv), tensorOf(be, [4, 5], gv), tensorOf(be, [4, 5], uv));
  const sig = (g: number): number => 1 / (1 + Math.exp(-g));
  assertUlps(await be.downloadF32(dup), dv.map((d, i) => d * silu(gv[i]!)), 1, "dup");
  const dsilu = (g: number): number => sig(g) + g * sig(g) * (1 - sig(g));
  assertUlps(await be.downloadF32(dgate), dv.map((d, i) => d * uv[i]! * dsilu(gv[i]!)), 2, "dgate");
});

void test("swigluBackward and dropoutApply on bf16 storage equal their f32 results rounded to bf16", async () => {
  const [gv, uv, dv] = [randnBf16(r, 12, 3), randnBf16(r, 12), randnBf16(r, 12)];
  const run = async (dtype: "f32" | "bf16"): Promise<Float32Array[]> => {
    const dgate = be.alloc(dtype, [12]);
    const dup = be.alloc(dtype, [12]);
    be.swigluBackward(dgate, dup, tensorOf(be, [12], dv, dtype), tensorOf(be, [12], gv, dtype), tensorOf(be, [12], uv, dtype));
    const mask = be.alloc("u8", [12]);
    be.upload(mask, Uint8Array.from({ length: 12 }, (_, i) => i % 3 === 0 ? 0 : 1));
    const dropped = be.alloc(dtype, [12]);
    be.dropoutApply(dropped, tensorOf(be, [12], gv, dtype), mask, 0.3);
    return Promise.all([dgate, dup, dropped].map((t) => be.downloadF32(t)));
  };
  const [f32, bf16] = [await run("f32"), await run("bf16")];
  f32.forEach((values, i) => {
    assert.deepEqual(bf16[i], Float32Array.from(values, (v) => bf16BitsToF32(f32ToBf16Bits(v))), `output ${i}`);
  });
});

void test("swigluBackward matches central differences for gate and up", async () => {
  const n = 10;
  const gv = randn(r, n, 2);
  const uv = randn(r, n);
  const R = randn(r, n);
  const dgate = be.alloc("f32", [n]);
  const dup = be.alloc("f32", [n]);
  be.swigluBackward(dgate, dup, tensorOf(be, [n], R), tensorOf(be, [n], gv), tensorOf(be, [n], uv));
  const loss = async (g: Float32Array, u: Float32Array): Promise<number> => {
    const out = be.alloc("f32", [n]);
    be.swigluForward(out, tensorOf(be, [n], g), tensorOf(be, [n], u));
    return project(await be.downloadF32(out), R);
  };
  await checkGradient("gate", gv, await be.downloadF32(dgate), (g) => loss(g, uv));
  await checkGradient("up", uv, await be.downloadF32(dup), (u) => loss(gv, u));
});

void test("addBias adds per column; biasBackward adds column sums to what dbias holds", async () => {
  const xv = randn(r, 12);
  const bv = randn(r, 4);
  const x = tensorOf(be, [3, 4], xv);
  be.addBias(x, tensorOf(be, [4], bv));
  assertUlps(await be.downloadF32(x), xv.map((v, i) => v + bv[i % 4]!), 0.5, "addBias");
  const dbias = tensorOf(be, [4], Float32Array.from([1, 2, 3, 4]));
  be.biasBackward(dbias, tensorOf(be, [3, 4], xv));
  const sums = [0, 1, 2, 3].map((j) => 1 + j + xv[j]! + xv[4 + j]! + xv[8 + j]!);
  assertUlps(await be.downloadF32(dbias), sums, 0.5, "biasBackward accumulates");
  assertInternal(() => { be.addBias(x, be.alloc("f32", [3])); }, "addBias: bias shape [3] does not match [4]");
});

/** MurmurHash3's fmix32 written out with BigInt arithmetic (independent of the Math.imul code under test). */
function fmix32Big(h: bigint): bigint {
  const M = 0xffffffffn;
  h ^= h >> 16n;
  h = (h * 0x85ebca6bn) & M;
  h ^= h >> 13n;
  h = (h * 0xc2b2ae35n) & M;
  return h ^ (h >> 16n);
}

void test("dropoutMask: the documented counter hash, kept fraction 1 - p, same seed same mask", async () => {
  const be = backend();
  const n = 20000;
  const mask = be.alloc("u8", [n]);
  const seed: [number, number] = [0xdeadbeef, 12345];
  be.dropoutMask(mask, 0.1, seed);
  const m = (await be.download(mask)) as Uint8Array;
  // Element i, by the spec in src/util/dropout-hash.ts: fmix32(fmix32(i * 0x9e3779b9 ^ s0) ^ s1), keep when
  // the top 24 bits reach ceil(p * 2^24).
  for (const i of [0, 1, 2, 777, 19999]) {
    const h = fmix32Big(fmix32Big(((BigInt(i) * 0x9e3779b9n) & 0xffffffffn) ^ BigInt(seed[0])) ^ BigInt(seed[1]));
    const keep = Number(h >> 8n) >= Math.ceil(0.1 * 2 ** 24) ? 1 : 0;
    assert.equal(m[i], keep, `element ${i}`);
  }
  const kept = m.reduce((a, b) => a + b, 0) / n;
  assert.ok(Math.abs(kept - 0.9) < 0.01, `kept ${kept}`);
  const again = be.alloc("u8", [n]);
  be.dropoutMask(again, 0.1, seed);
  assert.deepEqual(await be.download(again), m);
  be.dropoutMask(again, 0.1, [seed[0], seed[1] + 1]);
  const other = (await be.download(again)) as Uint8Array;
  let same = 0;
  other.forEach((v, i) => (same += v === m[i] ? 1 : 0));
  assert.ok(same / n < 0.9, "another seed gives another mask");
  be.dropoutMask(again, 0, seed);
  assert.ok(((await be.download(again)) as Uint8Array).every((v) => v === 1), "p = 0 keeps everything");
  assert.throws(() => { be.dropoutMask(again, 1, seed); }, /p is 1/);
});
