// matmul against a float64 triple loop for all four transpose combinations, alpha and accumulate, odd sizes,
// bf16 storage, worker threads, shape errors, and central-difference checks of both operands' gradients.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Tensor } from "../../../src/backend/types.ts";
import { f32ToBf16Bits } from "../../../src/util/half.ts";
import { assertClose, assertInternal, assertUlps, backend, checkGradient, project, randn, randnBf16, rng, tensorOf } from "./helpers.ts";

/** op(a) (M, K) @ op(b) (K, N) in float64, reading a and b from their stored layouts. */
function naiveMatmul(a: Float32Array, b: Float32Array, M: number, N: number, K: number, transA: boolean, transB: boolean): Float64Array {
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += (transA ? a[k * M + i]! : a[i * K + k]!) * (transB ? b[j * K + k]! : b[k * N + j]!);
      out[i * N + j] = s;
    }
  }
  return out;
}

const be = backend();
const r = rng(11);

void test("matmul matches a float64 triple loop for every transpose combination and odd sizes", async () => {
  for (const [M, N, K] of [[1, 1, 1], [3, 5, 7], [17, 9, 33], [70, 130, 300], [4, 4, 0]] as const) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        const av = randn(r, M * K);
        const bv = randn(r, K * N);
        const a = tensorOf(be, transA ? [K, M] : [M, K], av);
        const b = tensorOf(be, transB ? [N, K] : [K, N], bv);
        const out = be.alloc("f32", [M, N]);
        be.matmul(out, a, b, { transA, transB });
        const expected = naiveMatmul(av, bv, M, N, K, transA, transB);
        // float64 sums rounded once: within one float32 ulp of the float64 result (float32 sums drift further).
        assertUlps(await be.downloadF32(out), expected, 1, `M=${M} N=${N} K=${K} transA=${transA} transB=${transB}`);
        for (const t of [a, b, out]) be.free(t);
      }
    }
  }
});

void test("matmul applies alpha and accumulates into out when asked", async () => {
  const [M, N, K] = [5, 6, 7];
  const av = randn(r, M * K);
  const bv = randn(r, N * K);
  const cv = randn(r, M * N);
  const a = tensorOf(be, [M, K], av);
  const b = tensorOf(be, [N, K], bv);
  const out = tensorOf(be, [M, N], cv);
  be.matmul(out, a, b, { transB: true, alpha: 0.5, accumulate: true });
  const product = naiveMatmul(av, bv, M, N, K, false, true);
  assertUlps(await be.downloadF32(out), product.map((p, i) => 0.5 * p + cv[i]!), 1, "alpha 0.5, accumulate");
  be.matmul(out, a, b, { transB: true, alpha: -2 });
  assertUlps(await be.downloadF32(out), product.map((p) => -2 * p), 1, "alpha -2, overwrite");
});

void test("matmul with bf16 operands and output equals the f32 matmul of the same values rounded to bf16", async () => {
  const [M, N, K] = [9, 13, 21];
  const av = randnBf16(r, M * K);
  const bv = randnBf16(r, N * K);
  const outF32 = be.alloc("f32", [M, N]);
  be.matmul(outF32, tensorOf(be, [M, K], av), tensorOf(be, [N, K], bv), { transB: true });
  const outBf16 = be.alloc("bf16", [M, N]);
  // Mixed storage: bf16 weight, f32 activation.
  be.matmul(outBf16, tensorOf(be, [M, K], av, "f32"), tensorOf(be, [N, K], bv, "bf16"), { transB: true });
  const f32Result = await be.downloadF32(outF32);
  assert.deepEqual(await be.download(outBf16), Uint16Array.from(f32Result, (v) => f32ToBf16Bits(v)));
});

void test("matmul split across worker threads gives the same bits as one thread", async () => {
  const threaded = backend(2);
  for (const [M, N, K, transA, transB] of [[64, 600, 40, false, true], [300, 20, 500, true, false], [130, 70, 90, true, true]] as const) {
    const av = randn(r, M * K);
    const bv = randn(r, K * N);
    const run = async (b: typeof be): Promise<Float32Array> => {
      const out = b.alloc("f32", [M, N]);
      b.matmul(out, tensorOf(b, transA ? [K, M] : [M, K], av), tensorOf(b, transB ? [N, K] : [K, N], bv), { transA, transB });
      return b.downloadF32(out);
    };
    assert.deepEqual(await run(threaded), await run(be), `M=${M} N=${N} K=${K}`);
  }
});

void test("matmul rejects wrong shapes, dtypes and overlapping output", () => {
  const a = be.alloc("f32", [4, 3]);
  const b = be.alloc("f32", [3, 5]);
  const out = be.alloc("f32", [4, 5]);
  assertInternal(() => { be.matmul(out, a, be.alloc("f32", [4, 5])); }, "matmul: b shape [4, 5] does not match [3, 5]");
  assertInternal(() => { be.matmul(out, a, b, { transA: true }); }, "matmul: a (stored (K, M) for transA) shape [4, 3] does not match [4, 4]");
  assertInternal(() => { be.matmul(be.alloc("f32", [4, 6]), a, b); }, "matmul: b shape [3, 5] does not match [3, 6]");
  assertInternal(() => { be.matmul(out, be.alloc("i32", [4, 3]), b); }, "matmul: a dtype i32 is not f32 or bf16 or f16");
  const square = be.alloc("f32", [4, 4]);
  assertInternal(() => { be.matmul(be.view(square, [4, 4]), square, square); }, "shares storage");
  assertInternal(() => { be.matmul(out, a, b, { alpha: NaN }); }, "alpha is NaN");
});

/** Runs the Linear forward y = x @ W^T + bias with the backend, returns sum(y * R). */
async function linearLoss(xv: Float32Array, wv: Float32Array, bv: Float32Array, R: Float32Array, N: number, K: number, F: number): Promise<number> {
  const y = be.alloc("f32", [N, F]);
  const tensors: Tensor[] = [tensorOf(be, [N, K], xv), tensorOf(be, [F, K], wv), tensorOf(be, [F], bv)];
  be.matmul(y, tensors[0]!, tensors[1]!, { transB: true });
  be.addBias(y, tensors[2]!);
  const value = project(await be.downloadF32(y), R);
  for (const t of [...tensors, y]) be.free(t);
  return value;
}

void test("the Linear backward (dx = dy @ W, dW = dy^T @ x, dbias = colsum dy) matches central differences", async () => {
  const [N, K, F] = [5, 4, 3];
  const xv = randn(r, N * K);
  const wv = randn(r, F * K);
  const bv = randn(r, F);
  const R = randn(r, N * F);
  const dy = tensorOf(be, [N, F], R);
  const dx = be.alloc("f32", [N, K]);
  const dw = be.alloc("f32", [F, K]);
  const dbias = be.alloc("f32", [F]);
  be.matmul(dx, dy, tensorOf(be, [F, K], wv));
  be.matmul(dw, dy, tensorOf(be, [N, K], xv), { transA: true });
  be.biasBackward(dbias, dy);
  await checkGradient("x", xv, await be.downloadF32(dx), (x) => linearLoss(x, wv, bv, R, N, K, F));
  await checkGradient("W", wv, await be.downloadF32(dw), (w) => linearLoss(xv, w, bv, R, N, K, F));
  await checkGradient("bias", bv, await be.downloadF32(dbias), (b) => linearLoss(xv, wv, b, R, N, K, F));
});

void test("matmul of wide shapes (the lm_head and its backward) stays close to float64", async () => {
  const [M, N, K] = [8, 1000, 64];
  const av = randn(r, M * K);
  const bv = randn(r, N * K);
  const out = be.alloc("f32", [M, N]);
  be.matmul(out, tensorOf(be, [M, K], av), tensorOf(be, [N, K], bv), { transB: true });
  assertClose(await be.downloadF32(out), naiveMatmul(av, bv, M, N, K, false, true), 1e-7, "lm_head shape");
});
