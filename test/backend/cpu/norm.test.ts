// RMSNorm against a float64 rendering of HF's LlamaRMSNorm (normalize in float32, cast to x's dtype, then
// scale), bf16 storage, shapes with a head axis, and central-difference checks of dx and dweight.
import { test } from "node:test";
import assert from "node:assert/strict";
import { bf16BitsToF32, f32ToBf16Bits } from "../../../src/util/half.ts";
import { assertClose, assertInternal, assertUlps, backend, checkGradient, project, randn, randnBf16, rng, tensorOf } from "./helpers.ts";

const be = backend();
const r = rng(21);
const toBf16 = (v: number): number => bf16BitsToF32(f32ToBf16Bits(v));

/** HF: variance = mean(x^2); h = x * rsqrt(variance + eps) in float32; h.to(dtype); weight * h. */
function naiveRmsnorm(x: Float32Array, w: Float32Array, rows: number, cols: number, eps: number, cast: (v: number) => number): { out: Float64Array; rstd: Float64Array } {
  const out = new Float64Array(rows * cols);
  const rstd = new Float64Array(rows);
  for (let i = 0; i < rows; i++) {
    let ss = 0;
    for (let j = 0; j < cols; j++) ss += x[i * cols + j]! ** 2;
    const rs = Math.fround(1 / Math.sqrt(ss / cols + Math.fround(eps)));
    rstd[i] = rs;
    for (let j = 0; j < cols; j++) out[i * cols + j] = cast(Math.fround(x[i * cols + j]! * rs)) * w[j]!;
  }
  return { out, rstd };
}

void test("rmsnormForward matches HF's order of operations in float32", async () => {
  for (const [rows, cols] of [[1, 1], [3, 7], [5, 64]] as const) {
    const xv = randn(r, rows * cols, 3);
    const wv = randn(r, cols);
    const out = be.alloc("f32", [rows, cols]);
    const rstd = be.alloc("f32", [rows]);
    be.rmsnormForward(out, rstd, tensorOf(be, [rows, cols], xv), tensorOf(be, [cols], wv), 1e-5);
    const expected = naiveRmsnorm(xv, wv, rows, cols, 1e-5, Math.fround);
    assertUlps(await be.downloadF32(rstd), expected.rstd, 1, "rstd");
    assertUlps(await be.downloadF32(out), expected.out, 0.5, "out");
  }
});

void test("rmsnormForward with bf16 x casts the normalized value to bf16 before the weight multiply", async () => {
  const [rows, cols] = [4, 24];
  const xv = randnBf16(r, rows * cols, 2);
  const wv = randnBf16(r, cols);
  const out = be.alloc("bf16", [rows, cols]);
  const rstd = be.alloc("f32", [rows]);
  be.rmsnormForward(out, rstd, tensorOf(be, [rows, cols], xv, "bf16"), tensorOf(be, [cols], wv, "bf16"), 1e-6);
  const expected = naiveRmsnorm(xv, wv, rows, cols, 1e-6, toBf16);
  // bf16 * bf16 is exact in float32, so the only rounding left is the final one to bf16.
  assert.deepEqual(await be.download(out), Uint16Array.from(expected.out, (v) => f32ToBf16Bits(v)));
});

void test("rmsnorm accepts (N, H, D) with rstd (N, H), as a per-head norm needs", async () => {
  const xv = randn(r, 2 * 3 * 4);
  const wv = randn(r, 4);
  const out = be.alloc("f32", [2, 3, 4]);
  const rstd = be.alloc("f32", [2, 3]);
  be.rmsnormForward(out, rstd, tensorOf(be, [2, 3, 4], xv), tensorOf(be, [4], wv), 1e-5);
  assertUlps(await be.downloadF32(out), naiveRmsnorm(xv, wv, 6, 4, 1e-5, Math.fround).out, 0.5, "out");
  assertInternal(() => { be.rmsnormForward(out, be.alloc("f32", [6]), tensorOf(be, [2, 3, 4], xv), tensorOf(be, [4], wv), 1e-5); }, "rmsnormForward: rstd shape [6] does not match [2, 3]");
  assertInternal(() => { be.rmsnormForward(out, rstd, tensorOf(be, [2, 3, 4], xv), be.alloc("f32", [3]), 1e-5); }, "weight shape [3] does not match [4]");
  assertInternal(() => { be.rmsnormForward(out, be.alloc("bf16", [2, 3]), tensorOf(be, [2, 3, 4], xv), tensorOf(be, [4], wv), 1e-5); }, "rstd dtype bf16 is not f32");
});

void test("rmsnormBackward matches the chain rule through mean(x^2) written out in float64", async () => {
  const [rows, cols] = [4, 33];
  const xv = randn(r, rows * cols, 2);
  const wv = randn(r, cols);
  const gv = randn(r, rows * cols);
  const x = tensorOf(be, [rows, cols], xv);
  const w = tensorOf(be, [cols], wv);
  const rstd = be.alloc("f32", [rows]);
  be.rmsnormForward(be.alloc("f32", [rows, cols]), rstd, x, w, 1e-5);
  const dx = be.alloc("f32", [rows, cols]);
  const dw = be.alloc("f32", [cols]);
  be.rmsnormBackward(dx, dw, tensorOf(be, [rows, cols], gv), x, w, rstd, false);
  // y_j = w_j x_j s with s = (mean(x^2) + eps)^-1/2 and ds/dx_k = -s^3 x_k / C:
  // dx_k = w_k g_k s - (s^3 x_k / C) sum_j w_j g_j x_j ; dw_j = sum_rows g_j x_j s.
  const rs = await be.downloadF32(rstd);
  const dxExpected = new Float64Array(rows * cols);
  const dwExpected = new Float64Array(cols);
  for (let i = 0; i < rows; i++) {
    const s = rs[i]!;
    let inner = 0;
    for (let j = 0; j < cols; j++) inner += wv[j]! * gv[i * cols + j]! * xv[i * cols + j]!;
    for (let j = 0; j < cols; j++) {
      dxExpected[i * cols + j] = wv[j]! * gv[i * cols + j]! * s - ((s ** 3 * xv[i * cols + j]!) / cols) * inner;
      dwExpected[j]! += gv[i * cols + j]! * xv[i * cols + j]! * s;
    }
  }
  assertClose(await be.downloadF32(dx), dxExpected, 1e-6, "dx");
  // dweight uses float32(x * rstd), as the forward multiplied by: within float32 rounding of each term.
  assertClose(await be.downloadF32(dw), dwExpected, 1e-6, "dweight");
});

async function rmsnormLoss(xv: Float32Array, wv: Float32Array, R: Float32Array, rows: number, cols: number): Promise<number> {
  const out = be.alloc("f32", [rows, cols]);
  const rstd = be.alloc("f32", [rows]);
  const x = tensorOf(be, [rows, cols], xv);
  const w = tensorOf(be, [cols], wv);
  be.rmsnormForward(out, rstd, x, w, 1e-5);
  const value = project(await be.downloadF32(out), R);
  for (const t of [out, rstd, x, w]) be.free(t);
  return value;
}

void test("rmsnormBackward matches central differences for x and weight, and accumulates when asked", async () => {
  const [rows, cols] = [3, 8];
  const xv = randn(r, rows * cols);
  const wv = randn(r, cols);
  const R = randn(r, rows * cols);
  const x = tensorOf(be, [rows, cols], xv);
  const w = tensorOf(be, [cols], wv);
  const out = be.alloc("f32", [rows, cols]);
  const rstd = be.alloc("f32", [rows]);
  be.rmsnormForward(out, rstd, x, w, 1e-5);
  const dx = be.alloc("f32", [rows, cols]);
  const dw = be.alloc("f32", [cols]);
  const dout = tensorOf(be, [rows, cols], R);
  be.rmsnormBackward(dx, dw, dout, x, w, rstd, false);
  const dxv = await be.downloadF32(dx);
  const dwv = await be.downloadF32(dw);
  await checkGradient("x", xv, dxv, (v) => rmsnormLoss(v, wv, R, rows, cols));
  await checkGradient("weight", wv, dwv, (v) => rmsnormLoss(xv, v, R, rows, cols));
  // A second backward accumulates into dx and dweight: both double.
  be.rmsnormBackward(dx, dw, dout, x, w, rstd, true);
  assertUlps(await be.downloadF32(dx), dxv.map((v) => 2 * v), 0, "dx accumulated");
  assertUlps(await be.downloadF32(dw), dwv.map((v) => 2 * v), 0, "dweight accumulated");
  // dweight null: dx only, overwritten.
  be.rmsnormBackward(dx, null, dout, x, w, rstd, false);
  assertUlps(await be.downloadF32(dx), dxv, 0, "dx overwritten");
});

void test("plusOne (Gemma): out = x * rstd * (1 + w) in float32, cast once; dx and dweight match central differences", async () => {
  const rows = 3;
  const cols = 8;
  const xv = randnBf16(r, rows * cols);
  const wv = randn(r, cols, 0.2);
  // bf16 x: no cast between the normalization and the weight, one rounding of the product.
  const out = be.alloc("bf16", [rows, cols]);
  be.rmsnormForward(out, be.alloc("f32", [rows]), tensorOf(be, [rows, cols], xv, "bf16"), tensorOf(be, [cols], wv), 1e-6, { plusOne: true });
  const expected: number[] = [];
  for (let i = 0; i < rows; i++) {
    let ss = 0;
    for (let j = 0; j < cols; j++) ss += xv[i * cols + j]! ** 2;
    const rs = Math.fround(1 / Math.sqrt(ss / cols + Math.fround(1e-6)));
    for (let j = 0; j < cols; j++) expected.push(toBf16(Math.fround(xv[i * cols + j]! * rs) * Math.fround(1 + wv[j]!)));
  }
  assert.deepEqual(Array.from(await be.downloadF32(out)), expected);
  // f32 gradients through (1 + w).
  const R = randn(r, rows * cols);
  const loss = async (x: Float32Array, w: Float32Array): Promise<number> => {
    const o = be.alloc("f32", [rows, cols]);
    be.rmsnormForward(o, be.alloc("f32", [rows]), tensorOf(be, [rows, cols], x), tensorOf(be, [cols], w), 1e-6, { plusOne: true });
    return project(await be.downloadF32(o), R);
  };
  const x = tensorOf(be, [rows, cols], xv);
  const w = tensorOf(be, [cols], wv);
  const rstd = be.alloc("f32", [rows]);
  be.rmsnormForward(be.alloc("f32", [rows, cols]), rstd, x, w, 1e-6, { plusOne: true });
  const dx = be.alloc("f32", [rows, cols]);
  const dw = be.alloc("f32", [cols]);
  be.fill(dw, 0);
  be.rmsnormBackward(dx, dw, tensorOf(be, [rows, cols], R), x, w, rstd, false, { plusOne: true });
  await checkGradient("x", xv, await be.downloadF32(dx), (v) => loss(v, wv), 2e-3, 1e-3);
  await checkGradient("w", wv, await be.downloadF32(dw), (v) => loss(xv, v), 2e-3, 1e-3);
});
