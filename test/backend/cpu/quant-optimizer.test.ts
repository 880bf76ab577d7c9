// dequantize4bit on a hand-packed NF4 example (high nibble first, odd length, two blocks), AdamW against a
// hand-computed two-step example, and sumSquares.
import { test } from "node:test";
import assert from "node:assert/strict";
import { bf16BitsToF32, f32ToBf16Bits } from "../../../src/util/half.ts";
import { assertInternal, backend, tensorOf } from "./helpers.ts";

const be = backend();

const NF4 = Float32Array.from([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]);

void test("dequantize4bit decodes the high nibble first and scales by the element's block absmax", async () => {
  // 7 elements, blocksize 4: codes 15, 0, 7, 12 | 3, 8, 1 (+ a padding nibble 9 that must be ignored).
  const packed = be.alloc("u8", [4]);
  be.upload(packed, Uint8Array.from([0xf0, 0x7c, 0x38, 0x19]));
  const absmax = tensorOf(be, [2], Float32Array.from([2, 0.3]));
  const code = tensorOf(be, [16], NF4);
  const q = { packed, absmax, code, blocksize: 4 };
  const out = be.alloc("f32", [7]);
  be.dequantize4bit(out, q);
  const a1 = Math.fround(0.3);
  const expected = [2 * 1.0, 2 * -1.0, 0, 2 * NF4[12]!, NF4[3]! * a1, NF4[8]! * a1, NF4[1]! * a1].map(Math.fround);
  assert.deepEqual(Array.from(await be.downloadF32(out)), expected);
  const out16 = be.alloc("bf16", [7]);
  be.dequantize4bit(out16, q);
  assert.deepEqual(Array.from(await be.downloadF32(out16)), expected.map((v) => bf16BitsToF32(f32ToBf16Bits(v))));
  assertInternal(() => { be.dequantize4bit(be.alloc("f32", [9]), q); }, "dequantize4bit: packed (element count) shape [4] does not match [5]");
  assertInternal(() => { be.dequantize4bit(out, { ...q, blocksize: 2 }); }, "absmax shape [2] does not match [4]");
});

void test("adamwUpdate follows torch AdamW over two steps", async () => {
  // lr 0.1, betas (0.9, 0.999), eps 1e-8, weight decay 0.01; two parameters, grads (0.5, -0.25) and (0, 3).
  // Parameter 0 by hand in float64:
  //  step 1: p = 1 * (1 - 0.001) = 0.999; m = 0.1 * 0.5 = 0.05; v = 0.001 * 0.25 = 0.00025
  //          p -= (0.1 / 0.1) * 0.05 / (sqrt(0.00025) / sqrt(0.001) + 1e-8) = 0.05 / 0.50000001 -> 0.899000002
  //  step 2: p = 0.899 * 0.999...; m = 0.05 + 0.1 * (-0.25 - 0.05) = 0.02; v = 0.00025 * 0.999 + 0.001 * 0.0625 = 0.00031225
  //          p -= (0.1 / 0.19) * 0.02 / (sqrt(0.00031225) / sqrt(0.001999) + 1e-8) -> 0.8714672987
  // Parameter 1: a zero gradient first leaves m = v = 0 and moves p only by decay (-1.998); then
  //          m = 0.3, v = 0.009, p -> -2.0704156820.
  const params = tensorOf(be, [2], Float32Array.from([1, -2]));
  const m = be.alloc("f32", [2]);
  const v = be.alloc("f32", [2]);
  const hyper = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
  be.adamwUpdate(params, tensorOf(be, [2], Float32Array.from([0.5, 0])), m, v, { ...hyper, step: 1 });
  const p1 = await be.downloadF32(params);
  assert.ok(Math.abs(p1[0]! - 0.899000002) < 1e-7 && Math.abs(p1[1]! - -1.998) < 2e-7, `step 1: ${Array.from(p1).join(", ")}`);
  be.adamwUpdate(params, tensorOf(be, [2], Float32Array.from([-0.25, 3])), m, v, { ...hyper, step: 2 });
  const p2 = await be.downloadF32(params);
  assert.ok(Math.abs(p2[0]! - 0.8714672987) < 1e-7 && Math.abs(p2[1]! - -2.0704156820) < 3e-7, `step 2: ${Array.from(p2).join(", ")}`);
  assert.ok(Math.abs((await be.downloadF32(m))[0]! - 0.02) < 1e-9);
  assert.ok(Math.abs((await be.downloadF32(v))[1]! - 0.009) < 1e-9);
  // torch's float32 op order (mul_, lerp_, mul_/addcmul_, sqrt/div/add_, addcdiv_) emulated in numpy float32:
  assert.deepEqual(Array.from(p2), [0.8714673519134521, -2.070415735244751]);
  assertInternal(() => { be.adamwUpdate(params, be.alloc("f32", [3]), m, v, { ...hyper, step: 1 }); }, "grads has 3 elements, params has 2");
  assertInternal(() => { be.adamwUpdate(params, params, m, v, { ...hyper, step: 0 }); }, "step is 0");
  assertInternal(() => { be.adamwUpdate(be.alloc("bf16", [2]), params, m, v, { ...hyper, step: 1 }); }, "params dtype bf16 is not f32");
});

void test("sumSquares sums in float64", async () => {
  const big = new Float32Array(1000).fill(3);
  big[0] = 2 ** 12;
  // 2^24 + 999 * 9: in float32 the small terms would be lost against 2^24.
  assert.equal(await be.sumSquares(tensorOf(be, [1000], big)), 2 ** 24 + 999 * 9);
  assert.equal(await be.sumSquares(tensorOf(be, [2], Float32Array.from([1.5, -2]), "bf16")), 6.25);
});

void test("quantize4bit on the backend equals src/quant's quantize4bit, for f32 and bf16 tensors", async () => {
  const { quantize4bit } = await import("../../../src/quant/blockwise.ts");
  const n = 64 * 5 + 7; // a partial last block with an odd count
  const values = Float32Array.from({ length: n }, (_, i) => bf16BitsToF32(f32ToBf16Bits(Math.sin(i * 0.37) * (1 + (i % 13)))));
  for (const quantType of ["nf4", "fp4"] as const) {
    const expected = quantize4bit(values, quantType, 64);
    for (const dtype of ["f32", "bf16"] as const) {
      const packed = be.alloc("u8", [Math.ceil(n / 2)]);
      const absmax = be.alloc("f32", [Math.ceil(n / 64)]);
      be.quantize4bit(packed, absmax, tensorOf(be, [n], values, dtype), quantType, 64);
      assert.deepEqual(await be.download(packed), expected.packed, `${quantType} ${dtype} packed`);
      assert.deepEqual(await be.download(absmax), expected.absmax, `${quantType} ${dtype} absmax`);
    }
  }
  assertInternal(() => {
    be.quantize4bit(be.alloc("u8", [4]), be.alloc("f32", [1]), tensorOf(be, [8], new Float32Array(8)), "nf4", 48);
  }, "blocksize 48");
});
