// Tests of double quantization: the exact float32 mean used as offset, the nested 8-bit codes of
// absmax - offset at blocksize 256, and the way back within half a dynamic-map gap.
import { test } from "node:test";
import assert from "node:assert/strict";
import { dynamicMap } from "../../src/quant/codes.ts";
import { dequantizeNestedAbsmax, doubleQuantizeAbsmax, meanF32 } from "../../src/quant/double-quant.ts";
import { normalF32 } from "./helpers.ts";

const f = Math.fround;

void test("meanF32 rounds the exact mean once, whatever the order", () => {
  const values = Float32Array.of(16777216, 1, 1, 1, 1);
  // A float32 running sum drops every +1 (16777217 is not a float32), giving 3355443.25.
  let running = 0;
  for (const v of values) running = f(running + v);
  assert.equal(f(running / 5), 3355443.25);
  assert.equal(meanF32(values), 3355444);
  assert.equal(meanF32(values.slice().reverse()), 3355444);
  // Ties to even: (1 + 2^-24) / 2 is halfway between 0.5 and its successor 0.5 + 2^-24 -> 0.5;
  // (1 + 3 * 2^-24) / 2 is halfway between 0.5 + 2^-24 (odd) and 0.5 + 2^-23 (even) -> the latter.
  assert.equal(meanF32(Float32Array.of(1, 2 ** -24)), 0.5);
  assert.equal(meanF32(Float32Array.of(1, 3 * 2 ** -24)), 0.5 + 2 ** -23);
  // Just past a tie, the sticky bits decide: rounds up.
  assert.equal(meanF32(Float32Array.of(1, 2 ** -24, 2 ** -60, 0)), 0.25 + 2 ** -25);
  assert.equal(meanF32(Float32Array.of(1, 2 ** -24 + 2 ** -47)), 0.5 + 2 ** -24);
  assert.equal(meanF32(Float32Array.of(-3, 1)), -1);
  assert.equal(meanF32(new Float32Array(4)), 0);
  assert.ok(Number.isNaN(meanF32(Float32Array.of(1, NaN))));
  assert.equal(meanF32(Float32Array.of(1, Infinity)), Infinity);
  // Values in [2^-7, 2^-4) sum exactly in a double, so float32(sum / n) is the reference here.
  const x = normalF32(1000, 9, 0.005).map((v) => 0.02 + Math.abs(v) % 0.04);
  let sum = 0;
  for (const v of x) sum += v;
  assert.equal(meanF32(x), f(sum / x.length));
});

void test("double quantization: offset, nested absmax per 256 blocks, codes, and the way back", () => {
  const n = 256 * 3 + 40;
  const absmax = normalF32(n, 21, 0.01).map((v) => 0.03 + Math.abs(v));
  const nested = doubleQuantizeAbsmax(absmax);
  assert.equal(nested.offset, meanF32(absmax));
  assert.equal(nested.nestedBlocksize, 256);
  assert.equal(nested.qabsmax.length, n);
  assert.equal(nested.nestedAbsmax.length, 4);
  assert.deepEqual(nested.nestedCode, dynamicMap());
  const centered = absmax.map((a) => a - nested.offset);
  for (let g = 0; g < 4; g++) {
    const group = centered.subarray(g * 256, Math.min(n, (g + 1) * 256));
    assert.equal(nested.nestedAbsmax[g], Math.max(...[...group].map(Math.abs)));
  }
  const map = dynamicMap();
  const sorted = [...map];
  const halfGap = Math.max(...sorted.slice(1).map((v, i) => v - sorted[i]!)) / 2;
  const back = dequantizeNestedAbsmax(nested);
  for (let k = 0; k < n; k++) {
    const scale = nested.nestedAbsmax[Math.floor(k / 256)]!;
    // bnb: dequantize_blockwise (one float32 product), then absmax += offset (one float32 sum).
    assert.equal(back[k], f(f(map[nested.qabsmax[k]!]! * scale) + nested.offset));
    assert.ok(Math.abs(back[k]! - absmax[k]!) <= halfGap * scale * (1 + 1e-6) + 1e-9, `block ${k}`);
    assert.ok(Math.abs(back[k]! - absmax[k]!) / absmax[k]! < 0.01, `block ${k} relative error`);
  }
});

void test("double quantization of a constant absmax: every code decodes back to the offset", () => {
  const absmax = new Float32Array(300).fill(0.25);
  const nested = doubleQuantizeAbsmax(absmax);
  assert.equal(nested.offset, 0.25);
  assert.deepEqual([...nested.nestedAbsmax], [0, 0]);
  assert.deepEqual([...dequantizeNestedAbsmax(nested)], [...absmax]);
});
