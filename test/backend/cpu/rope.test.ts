// Rotary embedding against HF's formula in float64 (q*cos + rotate_half(q)*sin, float32 angles), the inverse
// rotation, packed positions restarting per document, bf16 storage, and the backward as a gradient.
import { test } from "node:test";
import assert from "node:assert/strict";
import { f32ToBf16Bits } from "../../../src/util/half.ts";
import { assertClose, assertInternal, assertUlps, backend, checkGradient, intsOf, project, randn, randnBf16, rng, tensorOf } from "./helpers.ts";

const be = backend();
const r = rng(31);

/** HF default inv_freq in float32: 1 / theta^(2j / D). */
function invFreqOf(dim: number, theta = 10000): Float32Array {
  return Float32Array.from({ length: dim / 2 }, (_, j) => Math.fround(1 / Math.fround(theta ** Math.fround((2 * j) / dim))));
}

/** emb = cat(freqs, freqs), out = x * cos(emb) + rotate_half(x) * sin(emb), rotate_half(x) = cat(-x2, x1). */
function naiveRope(x: Float32Array, positions: readonly number[], heads: number, dim: number, invFreq: Float32Array): Float64Array {
  const out = new Float64Array(x.length);
  const half = dim / 2;
  positions.forEach((p, t) => {
    const emb = Array.from({ length: dim }, (_, d) => Math.fround(Math.fround(p) * invFreq[d % half]!));
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * dim;
      for (let d = 0; d < dim; d++) {
        const rotated = d < half ? -x[base + d + half]! : x[base + d - half]!;
        out[base + d] = x[base + d]! * Math.fround(Math.cos(emb[d]!)) + rotated * Math.fround(Math.sin(emb[d]!));
      }
    }
  });
  return out;
}

void test("ropeForward matches HF's rotate_half formula", async () => {
  for (const [heads, dim] of [[1, 2], [3, 8], [2, 16]] as const) {
    const positions = [0, 1, 2, 7, 100, 2047];
    const xv = randn(r, positions.length * heads * dim);
    const invFreq = invFreqOf(dim);
    const x = tensorOf(be, [positions.length, heads, dim], xv);
    be.ropeForward(x, intsOf(be, positions), tensorOf(be, [dim / 2], invFreq));
    assertUlps(await be.downloadF32(x), naiveRope(xv, positions, heads, dim, invFreq), 0.5, `heads=${heads} dim=${dim}`);
  }
});

void test("rotating by position p and then back gives x again", async () => {
  const positions = [0, 3, 50, 999, 4095];
  const xv = randn(r, positions.length * 2 * 8);
  const x = tensorOf(be, [positions.length, 2, 8], xv);
  const pos = intsOf(be, positions);
  const inv = tensorOf(be, [4], invFreqOf(8, 500000));
  be.ropeForward(x, pos, inv);
  be.ropeBackward(x, pos, inv);
  // Two float32 roundings of a rotation: a few ulps of the vector norm.
  assertClose(await be.downloadF32(x), xv, 1e-6, "inverse rotation");
});

void test("packed positions restarting at 0 give each document what a separate call gives it", async () => {
  const docLengths = [3, 1, 4];
  const [heads, dim] = [2, 8];
  const packedPositions = docLengths.flatMap((n) => Array.from({ length: n }, (_, i) => i));
  const xv = randn(r, packedPositions.length * heads * dim);
  const inv = tensorOf(be, [dim / 2], invFreqOf(dim));
  const packed = tensorOf(be, [packedPositions.length, heads, dim], xv);
  be.ropeForward(packed, intsOf(be, packedPositions), inv);
  const packedOut = await be.downloadF32(packed);
  let start = 0;
  for (const n of docLengths) {
    const part = xv.slice(start * heads * dim, (start + n) * heads * dim);
    const alone = tensorOf(be, [n, heads, dim], part);
    be.ropeForward(alone, intsOf(be, Array.from({ length: n }, (_, i) => i)), inv);
    assert.deepEqual(await be.downloadF32(alone), packedOut.slice(start * heads * dim, (start + n) * heads * dim));
    start += n;
  }
});

void test("ropeForward on bf16 storage equals the f32 result rounded to bf16", async () => {
  const positions = [0, 5, 17];
  const xv = randnBf16(r, 3 * 2 * 8);
  const inv = tensorOf(be, [4], invFreqOf(8));
  const a = tensorOf(be, [3, 2, 8], xv);
  const b = tensorOf(be, [3, 2, 8], xv, "bf16");
  be.ropeForward(a, intsOf(be, positions), inv);
  be.ropeForward(b, intsOf(be, positions), inv);
  assert.deepEqual(await be.download(b), Uint16Array.from(await be.downloadF32(a), (v) => f32ToBf16Bits(v)));
});

void test("ropeBackward is the gradient of ropeForward", async () => {
  const positions = [0, 1, 9];
  const [heads, dim] = [2, 4];
  const xv = randn(r, positions.length * heads * dim);
  const R = randn(r, xv.length);
  const inv = tensorOf(be, [dim / 2], invFreqOf(dim));
  const pos = intsOf(be, positions);
  const dx = tensorOf(be, [positions.length, heads, dim], R);
  be.ropeBackward(dx, pos, inv);
  await checkGradient("x", xv, await be.downloadF32(dx), async (v) => {
    const x = tensorOf(be, [positions.length, heads, dim], v);
    be.ropeForward(x, pos, inv);
    const value = project(await be.downloadF32(x), R);
    be.free(x);
    return value;
  });
});

void test("rope rejects an odd head dim, wrong invFreq and wrong positions", () => {
  const x = be.alloc("f32", [2, 1, 6]);
  assertInternal(() => { be.ropeForward(x, intsOf(be, [0, 1]), be.alloc("f32", [2])); }, "ropeForward: invFreq shape [2] does not match [3]");
  assertInternal(() => { be.ropeForward(x, intsOf(be, [0]), be.alloc("f32", [3])); }, "positions shape [1] does not match [2]");
  assertInternal(() => { be.ropeBackward(be.alloc("f32", [2, 1, 5]), intsOf(be, [0, 1]), be.alloc("f32", [2])); }, "ropeBackward: dx head dim 5 is odd");
});
