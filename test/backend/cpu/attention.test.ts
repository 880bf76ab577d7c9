// Attention against an explicit masked score matrix per document in float64, with GQA (H=4 over KV=2 and
// KV=1), unequal packed documents including length 1, bf16 storage, and central differences for dq, dk, dv.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Tensor } from "../../../src/backend/types.ts";
import { f32ToBf16Bits } from "../../../src/util/half.ts";
import { assertClose, assertInternal, backend, checkGradient, intsOf, project, randn, randnBf16, rng, tensorOf } from "./helpers.ts";

const be = backend();
const r = rng(41);

interface Case {
  docs: number[];
  heads: number;
  kvHeads: number;
  dim: number;
  /** Sliding window: query i sees keys j with i - window < j <= i. */
  window?: number;
}

/** Whether query i may see key j (positions within one document). */
function visible(c: Case, i: number, j: number): boolean {
  return j <= i && (c.window === undefined || j > i - c.window);
}

const opts = (c: Case): { window?: number } => (c.window === undefined ? {} : { window: c.window });

/** For each document and head: S = scale * Q K^T (T x T), -inf above the diagonal, P = softmax(S), O = P V. */
function naiveAttention(q: Float32Array, k: Float32Array, v: Float32Array, c: Case, scale: number): { out: Float64Array; lse: Float64Array } {
  const n = c.docs.reduce((a, b) => a + b, 0);
  const out = new Float64Array(n * c.heads * c.dim);
  const lse = new Float64Array(n * c.heads);
  let start = 0;
  for (const len of c.docs) {
    for (let h = 0; h < c.heads; h++) {
      const g = Math.floor(h / (c.heads / c.kvHeads));
      const qAt = (t: number, d: number): number => q[((start + t) * c.heads + h) * c.dim + d]!;
      const kAt = (t: number, d: number): number => k[((start + t) * c.kvHeads + g) * c.dim + d]!;
      const vAt = (t: number, d: number): number => v[((start + t) * c.kvHeads + g) * c.dim + d]!;
      const S = Array.from({ length: len }, (_, i) =>
        Array.from({ length: len }, (_, j) => {
          if (!visible(c, i, j)) return -Infinity;
          let dot = 0;
          for (let d = 0; d < c.dim; d++) dot += qAt(i, d) * kAt(j, d);
          return Math.fround(scale) * dot;
        }),
      );
      for (let i = 0; i < len; i++) {
        const row = S[i]!;
        const max = Math.max(...row);
        const e = row.map((s) => Math.exp(s - max));
        const sum = e.reduce((a, b) => a + b, 0);
        lse[(start + i) * c.heads + h] = max + Math.log(sum);
        for (let d = 0; d < c.dim; d++) {
          let acc = 0;
          for (let j = 0; j < len; j++) acc += (e[j]! / sum) * vAt(j, d);
          out[((start + i) * c.heads + h) * c.dim + d] = acc;
        }
      }
    }
    start += len;
  }
  return { out, lse };
}

/**
 * The backward from the definitions, per document and head with explicit matrices: dV = P^T dO, dP = dO V^T,
 * dS_ij = P_ij (dP_ij - sum_l P_il dP_il), dQ = scale dS K, dK = scale dS^T Q (kv heads sum their query heads).
 */
function naiveAttentionBackward(q: Float32Array, k: Float32Array, v: Float32Array, dout: Float32Array, c: Case, scale: number): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const n = c.docs.reduce((a, b) => a + b, 0);
  const dq = new Float64Array(n * c.heads * c.dim);
  const dk = new Float64Array(n * c.kvHeads * c.dim);
  const dv = new Float64Array(n * c.kvHeads * c.dim);
  const s32 = Math.fround(scale);
  let start = 0;
  for (const len of c.docs) {
    for (let h = 0; h < c.heads; h++) {
      const g = Math.floor(h / (c.heads / c.kvHeads));
      const qi = (t: number, d: number): number => ((start + t) * c.heads + h) * c.dim + d;
      const ki = (t: number, d: number): number => ((start + t) * c.kvHeads + g) * c.dim + d;
      const P = Array.from({ length: len }, (_, i) => {
        const row = Array.from({ length: len }, (_, j) => {
          if (!visible(c, i, j)) return -Infinity;
          let dot = 0;
          for (let d = 0; d < c.dim; d++) dot += q[qi(i, d)]! * k[ki(j, d)]!;
          return s32 * dot;
        });
        const max = Math.max(...row);
        const e = row.map((x) => Math.exp(x - max));
        const sum = e.reduce((a, b) => a + b, 0);
        return e.map((x) => x / sum);
      });
      const dP = P.map((_, i) =>
        P.map((_, j) => {
          let dot = 0;
          for (let d = 0; d < c.dim; d++) dot += dout[qi(i, d)]! * v[ki(j, d)]!;
          return dot;
        }),
      );
      for (let i = 0; i < len; i++) {
        const rowSum = P[i]!.reduce((acc, p, j) => acc + p * dP[i]![j]!, 0);
        for (let j = 0; j < len; j++) {
          const p = P[i]![j]!;
          const dS = p * (dP[i]![j]! - rowSum);
          for (let d = 0; d < c.dim; d++) {
            dq[qi(i, d)]! += s32 * dS * k[ki(j, d)]!;
            dk[ki(j, d)]! += s32 * dS * q[qi(i, d)]!;
            dv[ki(j, d)]! += p * dout[qi(i, d)]!;
          }
        }
      }
    }
    start += len;
  }
  return { dq, dk, dv };
}

function cuSeqlensOf(docs: readonly number[]): number[] {
  const bounds = [0];
  for (const len of docs) bounds.push(bounds[bounds.length - 1]! + len);
  return bounds;
}

const cases: Case[] = [
  { docs: [5], heads: 1, kvHeads: 1, dim: 4 },
  { docs: [3, 1, 6, 2], heads: 4, kvHeads: 2, dim: 8 },
  { docs: [1, 7, 1], heads: 4, kvHeads: 1, dim: 5 },
  { docs: [40, 9], heads: 4, kvHeads: 4, dim: 16 },
  // Sliding windows: shorter than some documents, a window of 1 (the token itself), one wider than every document.
  { docs: [3, 1, 9, 2], heads: 4, kvHeads: 2, dim: 8, window: 3 },
  { docs: [40, 9], heads: 4, kvHeads: 1, dim: 16, window: 7 },
  { docs: [6], heads: 2, kvHeads: 2, dim: 4, window: 1 },
  { docs: [5, 4], heads: 2, kvHeads: 1, dim: 4, window: 64 },
];

void test("attentionForward matches masked softmax attention per document, lse included", async () => {
  for (const c of cases) {
    const n = c.docs.reduce((a, b) => a + b, 0);
    const qv = randn(r, n * c.heads * c.dim);
    const kv = randn(r, n * c.kvHeads * c.dim);
    const vv = randn(r, n * c.kvHeads * c.dim);
    const scale = 1 / Math.sqrt(c.dim);
    const out = be.alloc("f32", [n, c.heads, c.dim]);
    const lse = be.alloc("f32", [n, c.heads]);
    const q = tensorOf(be, [n, c.heads, c.dim], qv);
    const k = tensorOf(be, [n, c.kvHeads, c.dim], kv);
    const v = tensorOf(be, [n, c.kvHeads, c.dim], vv);
    be.attentionForward(out, lse, q, k, v, intsOf(be, cuSeqlensOf(c.docs)), scale, opts(c));
    const expected = naiveAttention(qv, kv, vv, c, scale);
    const label = JSON.stringify(c);
    // Both sides sum in float64; what is left is the final float32 rounding.
    assertClose(await be.downloadF32(out), expected.out, 1e-7, `out ${label}`);
    assertClose(await be.downloadF32(lse), expected.lse, 1e-7, `lse ${label}`);
  }
});

void test("attention on bf16 storage equals the f32 result rounded to bf16", async () => {
  const c = cases[1]!;
  const n = c.docs.reduce((a, b) => a + b, 0);
  const [qv, kv, vv] = [c.heads, c.kvHeads, c.kvHeads].map((h) => randnBf16(r, n * h * c.dim)) as [Float32Array, Float32Array, Float32Array];
  const bounds = intsOf(be, cuSeqlensOf(c.docs));
  const run = (dtype: "f32" | "bf16"): Tensor => {
    const out = be.alloc(dtype, [n, c.heads, c.dim]);
    const q = tensorOf(be, [n, c.heads, c.dim], qv, dtype);
    const k = tensorOf(be, [n, c.kvHeads, c.dim], kv, dtype);
    const v = tensorOf(be, [n, c.kvHeads, c.dim], vv, dtype);
    be.attentionForward(out, be.alloc("f32", [n, c.heads]), q, k, v, bounds, 0.3);
    return out;
  };
  const f32Out = await be.downloadF32(run("f32"));
  assert.deepEqual(await be.download(run("bf16")), Uint16Array.from(f32Out, (x) => f32ToBf16Bits(x)));
});

void test("attentionBackward matches the backward written out with explicit P and dS matrices", async () => {
  for (const c of cases) {
    const n = c.docs.reduce((a, b) => a + b, 0);
    const qv = randn(r, n * c.heads * c.dim);
    const kv = randn(r, n * c.kvHeads * c.dim);
    const vv = randn(r, n * c.kvHeads * c.dim);
    const gv = randn(r, n * c.heads * c.dim);
    const scale = 1 / Math.sqrt(c.dim);
    const bounds = intsOf(be, cuSeqlensOf(c.docs));
    const q = tensorOf(be, [n, c.heads, c.dim], qv);
    const k = tensorOf(be, [n, c.kvHeads, c.dim], kv);
    const v = tensorOf(be, [n, c.kvHeads, c.dim], vv);
    const out = be.alloc("f32", q.shape);
    const lse = be.alloc("f32", [n, c.heads]);
    be.attentionForward(out, lse, q, k, v, bounds, scale, opts(c));
    const [dq, dk, dv] = [q, k, v].map((t) => be.alloc("f32", t.shape)) as [Tensor, Tensor, Tensor];
    be.attentionBackward(dq, dk, dv, tensorOf(be, q.shape, gv), q, k, v, out, lse, bounds, scale, opts(c));
    const expected = naiveAttentionBackward(qv, kv, vv, gv, c, scale);
    // The backend recomputes P from the float32 lse and takes D_i from the float32 out: ~1e-7 relative each.
    const label = JSON.stringify(c);
    assertClose(await be.downloadF32(dq), expected.dq, 1e-6, `dq ${label}`);
    assertClose(await be.downloadF32(dk), expected.dk, 1e-6, `dk ${label}`);
    assertClose(await be.downloadF32(dv), expected.dv, 1e-6, `dv ${label}`);
  }
});

async function attentionLoss(qv: Float32Array, kv: Float32Array, vv: Float32Array, R: Float32Array, c: Case, bounds: Tensor, scale: number): Promise<number> {
  const n = c.docs.reduce((a, b) => a + b, 0);
  const tensors = [
    be.alloc("f32", [n, c.heads, c.dim]),
    be.alloc("f32", [n, c.heads]),
    tensorOf(be, [n, c.heads, c.dim], qv),
    tensorOf(be, [n, c.kvHeads, c.dim], kv),
    tensorOf(be, [n, c.kvHeads, c.dim], vv),
  ] as const;
  be.attentionForward(tensors[0], tensors[1], tensors[2], tensors[3], tensors[4], bounds, scale, opts(c));
  const value = project(await be.downloadF32(tensors[0]), R);
  for (const t of tensors) be.free(t);
  return value;
}

void test("attentionBackward matches central differences for q, k and v (GQA, packed documents)", async () => {
  const small: Case[] = [{ docs: [2, 1, 3], heads: 4, kvHeads: 2, dim: 3 }, { docs: [1, 4], heads: 2, kvHeads: 1, dim: 4 }, { docs: [5, 2], heads: 2, kvHeads: 1, dim: 3, window: 2 }];
  for (const c of small) {
    const n = c.docs.reduce((a, b) => a + b, 0);
    const qv = randn(r, n * c.heads * c.dim);
    const kv = randn(r, n * c.kvHeads * c.dim);
    const vv = randn(r, n * c.kvHeads * c.dim);
    const R = randn(r, n * c.heads * c.dim);
    const bounds = intsOf(be, cuSeqlensOf(c.docs));
    const scale = 0.7;
    const out = be.alloc("f32", [n, c.heads, c.dim]);
    const lse = be.alloc("f32", [n, c.heads]);
    const q = tensorOf(be, [n, c.heads, c.dim], qv);
    const k = tensorOf(be, [n, c.kvHeads, c.dim], kv);
    const v = tensorOf(be, [n, c.kvHeads, c.dim], vv);
    be.attentionForward(out, lse, q, k, v, bounds, scale, opts(c));
    const dq = be.alloc("f32", q.shape);
    const dk = be.alloc("f32", k.shape);
    const dv = be.alloc("f32", v.shape);
    be.fill(dk, 123); // overwritten, not accumulated
    be.attentionBackward(dq, dk, dv, tensorOf(be, out.shape, R), q, k, v, out, lse, bounds, scale, opts(c));
    await checkGradient("q", qv, await be.downloadF32(dq), (x) => attentionLoss(x, kv, vv, R, c, bounds, scale));
    await checkGradient("k", kv, await be.downloadF32(dk), (x) => attentionLoss(qv, x, vv, R, c, bounds, scale));
    await checkGradient("v", vv, await be.downloadF32(dv), (x) => attentionLoss(qv, kv, x, R, c, bounds, scale));
  }
});

void test("attention rejects bad cuSeqlens, head counts and shapes", () => {
  const q = be.alloc("f32", [4, 4, 2]);
  const k = be.alloc("f32", [4, 2, 2]);
  const out = be.alloc("f32", [4, 4, 2]);
  const lse = be.alloc("f32", [4, 4]);
  assertInternal(() => { be.attentionForward(out, lse, q, k, k, intsOf(be, [0, 3]), 1); }, "must start at 0 and end at N = 4");
  assertInternal(() => { be.attentionForward(out, lse, q, k, k, intsOf(be, [0, 3, 2, 4]), 1); }, "decreases at index 2");
  assertInternal(() => { be.attentionForward(out, lse, q, be.alloc("f32", [4, 3, 2]), be.alloc("f32", [4, 3, 2]), intsOf(be, [0, 4]), 1); }, "4 heads, not a multiple of the 3 kv heads");
  assertInternal(() => { be.attentionForward(out, be.alloc("f32", [4]), q, k, k, intsOf(be, [0, 4]), 1); }, "attentionForward: lse shape [4] does not match [4, 4]");
  assertInternal(() => { be.attentionForward(out, lse, q, k, be.alloc("f32", [4, 2, 3]), intsOf(be, [0, 4]), 1); }, "v shape [4, 2, 3] does not match [4, 2, 2]");
  for (const window of [0, 2.5, -1]) {
    assertInternal(() => { be.attentionForward(out, lse, q, k, k, intsOf(be, [0, 4]), 1, { window }); }, `attentionForward: window is ${window}, expected a positive integer`);
  }
  assertInternal(() => { be.attentionBackward(out, k, k, out, q, k, k, out, lse, intsOf(be, [0, 4]), 1, { window: 0 }); }, "attentionBackward: window is 0");
});
