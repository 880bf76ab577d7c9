// Tests for the row-major -> column-major GEMM mapping (against a JS model of cuBLAS's column-major semantics),
// the up-front validation of a GemmCall, and the alignment the heuristic is told.
import { test } from "node:test";
import assert from "node:assert/strict";
import { addressAlignment, columnMajorGemm, validateGemm, type ColumnMajorGemm, type ColumnMajorLayout } from "../../../src/backend/cuda/cublaslt.ts";
import type { DeviceTensor, GemmCall } from "../../../src/backend/cuda/types.ts";
import type { DType } from "../../../src/backend/types.ts";
import { isTunaError } from "../../../src/util/errors.ts";
import { createRng } from "../../../src/util/random.ts";

/**
 * cuBLAS's column-major GEMM on plain arrays: element (i, j) of a stored matrix is data[i + j * ld].
 * Checks what cuBLAS checks (layout shapes agree with m, n, k and the ops; ld >= rows) before computing.
 */
function cublasReference(g: ColumnMajorGemm, first: Float64Array, second: Float64Array, d: Float64Array, alpha: number, beta: number): void {
  const shapeAfterOp = (l: ColumnMajorLayout & { op: 0 | 1 }): [number, number] => (l.op === 0 ? [l.rows, l.cols] : [l.cols, l.rows]);
  assert.deepEqual(shapeAfterOp(g.first), [g.m, g.k], "op(first) must be (m, k)");
  assert.deepEqual(shapeAfterOp(g.second), [g.k, g.n], "op(second) must be (k, n)");
  assert.deepEqual([g.d.rows, g.d.cols], [g.m, g.n], "D must be (m, n)");
  for (const [l, data] of [[g.first, first], [g.second, second], [g.d, d]] as const) {
    assert.ok(l.ld >= l.rows, "ld >= rows");
    assert.ok(data.length >= l.ld * (l.cols - 1) + l.rows, "the data covers the layout");
  }
  const at = (l: ColumnMajorLayout & { op: 0 | 1 }, data: Float64Array, r: number, c: number): number =>
    l.op === 0 ? data[r + c * l.ld]! : data[c + r * l.ld]!;
  for (let i = 0; i < g.m; i++) {
    for (let j = 0; j < g.n; j++) {
      let sum = 0;
      for (let l = 0; l < g.k; l++) sum += at(g.first, first, i, l) * at(g.second, second, l, j);
      const idx = i + j * g.d.ld;
      d[idx] = alpha * sum + beta * d[idx]!;
    }
  }
}

/** The row-major definition of GemmCall, written out directly. */
function rowMajorReference(m: number, n: number, k: number, a: Float64Array, b: Float64Array, transA: boolean, transB: boolean): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let l = 0; l < k; l++) {
        const av = transA ? a[l * m + i]! : a[i * k + l]!; // stored (K, M) or (M, K)
        const bv = transB ? b[j * k + l]! : b[l * n + j]!; // stored (N, K) or (K, N)
        sum += av * bv;
      }
      out[i * n + j] = sum;
    }
  }
  return out;
}

void test("the column-major call computes the row-major GEMM for all four transpose combinations", () => {
  const rng = createRng(7);
  const [m, n, k] = [3, 5, 4];
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      const a = Float64Array.from({ length: m * k }, () => rng.normal());
      const b = Float64Array.from({ length: k * n }, () => rng.normal());
      const g = columnMajorGemm(m, n, k, transA, transB);
      // The first operand is B's memory, the second A's: D^T = op(B)^T op(A)^T.
      const d = new Float64Array(m * n);
      cublasReference(g, b, a, d, 1, 0);
      const expected = rowMajorReference(m, n, k, a, b, transA, transB);
      for (let i = 0; i < m * n; i++) assert.ok(Math.abs(d[i]! - expected[i]!) < 1e-12, `transA=${transA} transB=${transB} element ${i}`);
    }
  }
});

void test("alpha scales and beta = 1 accumulates into D", () => {
  const rng = createRng(8);
  const [m, n, k] = [2, 3, 6];
  const a = Float64Array.from({ length: m * k }, () => rng.normal());
  const b = Float64Array.from({ length: k * n }, () => rng.normal());
  const start = Float64Array.from({ length: m * n }, () => rng.normal());
  const d = Float64Array.from(start);
  cublasReference(columnMajorGemm(m, n, k, true, false), b, a, d, 0.5, 1);
  const product = rowMajorReference(m, n, k, a, b, true, false);
  for (let i = 0; i < m * n; i++) assert.ok(Math.abs(d[i]! - (start[i]! + 0.5 * product[i]!)) < 1e-12);
});

void test("the mapping in numbers: M=3 N=5 K=4, transB, is cuBLAS m=5 n=3 with B transposed (ld K) and A as stored (ld K)", () => {
  assert.deepEqual(columnMajorGemm(3, 5, 4, false, true), {
    m: 5,
    n: 3,
    k: 4,
    first: { op: 1, rows: 4, cols: 5, ld: 4 },
    second: { op: 0, rows: 4, cols: 3, ld: 4 },
    d: { rows: 5, cols: 3, ld: 5 },
  });
});

function tensor(dtype: DType, shape: number[], ptr = 0x7f0000000000n): DeviceTensor {
  return { ptr, dtype, shape, size: shape.reduce((x, y) => x * y, 1) };
}

function call(overrides: Partial<GemmCall>): GemmCall {
  return {
    m: 2,
    n: 3,
    k: 4,
    a: tensor("bf16", [2, 4]),
    b: tensor("bf16", [4, 3]),
    d: tensor("f32", [2, 3]),
    transA: false,
    transB: false,
    alpha: 1,
    beta: 0,
    ...overrides,
  };
}

void test("validation accepts the supported dtype combinations and names what is wrong otherwise", () => {
  for (const [ab, d] of [["f32", "f32"], ["bf16", "bf16"], ["bf16", "f32"], ["f16", "f16"], ["f16", "f32"]] as const) {
    validateGemm(call({ a: tensor(ab, [2, 4]), b: tensor(ab, [4, 3]), d: tensor(d, [2, 3]) }));
  }
  const internal = (c: GemmCall, pattern: RegExp): void => {
    assert.throws(() => { validateGemm(c); }, (e) => isTunaError(e) && e.code === "INTERNAL" && pattern.test(e.message));
  };
  internal(call({ a: tensor("bf16", [2, 4]), b: tensor("f16", [4, 3]) }), /A is bf16 and B is f16/);
  internal(call({ a: tensor("f32", [2, 4]), b: tensor("f32", [4, 3]), d: tensor("bf16", [2, 3]) }), /D is bf16 but A and B are f32; D must be f32/);
  internal(call({ a: tensor("i32", [2, 4]), b: tensor("i32", [4, 3]) }), /must share one dtype of f32, bf16 or f16/);
  internal(call({ a: tensor("bf16", [4, 3]) }), /A \(bf16, shape \[4, 3\], 12 elements\) should hold \(M, K\) = 8 elements/);
  internal(call({ transB: true, b: tensor("bf16", [3, 5]) }), /B .* should hold \(N, K\) = 12 elements/);
  internal(call({ d: tensor("f32", [3, 3]) }), /D .* should hold \(M, N\) = 6 elements/);
  internal(call({ k: 0 }), /K must be a positive integer/);
  internal(call({ alpha: Number.NaN }), /alpha is NaN/);
  internal(call({ a: tensor("bf16", [2, 4], 0n) }), /A has a null device address/);
});

void test("address alignment: the largest power of two up to 256 dividing the address", () => {
  assert.equal(addressAlignment(0x7f0000000000n), 256);
  assert.equal(addressAlignment(0x7f0000000080n), 128);
  assert.equal(addressAlignment(0x7f0000000002n), 2);
  assert.equal(addressAlignment(0x7f0000000003n), 1);
});
