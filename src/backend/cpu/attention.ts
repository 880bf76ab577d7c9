// Causal grouped-query attention over packed documents for the CPU backend, flash-attention style: one
// row of scores at a time, lse saved by the forward, D_i = rowsum(dout * out) and dS = P * (dP - D_i) backward.
import type { AttentionOptions, Tensor } from "../types.ts";
import { checkAttentionWindow, checkSoftcap } from "../op-checks.ts";
import { describe, expectDtype, expectFinite, expectFloat, expectRank, expectShape, fail } from "../checks.ts";
import { expectSeparate, f32Data, i32Data, outputFloats, readFloats, writeFloats, type TensorStore, type Slot } from "./store.ts";

interface Layout {
  n: number;
  heads: number;
  kvHeads: number;
  dim: number;
  /** Document boundaries, cuSeqlens[0] = 0 ... cuSeqlens[S] = N. */
  bounds: Int32Array;
}

/** Checks q (N, H, D), k and v (N, KV, D) with H a multiple of KV, and cuSeqlens i32 (S+1) from 0 up to N. */
function checkLayout(store: TensorStore, op: string, q: Tensor, k: Tensor, v: Tensor, cuSeqlens: Tensor): Layout {
  for (const [what, t] of [["q", q], ["k", k], ["v", v]] as const) {
    expectFloat(op, what, t);
    expectRank(op, what, t, 3);
  }
  const [n, heads, dim] = q.shape as [number, number, number];
  const kvHeads = k.shape[1]!;
  expectShape(op, "k", k, [n, kvHeads, dim]);
  expectShape(op, "v", v, [n, kvHeads, dim]);
  if (kvHeads === 0 || heads % kvHeads !== 0) fail(op, `${describe("q", q)} has ${heads} heads, not a multiple of the ${kvHeads} kv heads of ${describe("k", k)}`);
  expectDtype(op, "cuSeqlens", cuSeqlens, ["i32"]);
  expectRank(op, "cuSeqlens", cuSeqlens, 1);
  const bounds = i32Data(op, "cuSeqlens", store.get(op, "cuSeqlens", cuSeqlens));
  const text = (): string => `[${Array.from(bounds.subarray(0, 8)).join(", ")}${bounds.length > 8 ? ", ..." : ""}]`;
  if (bounds.length === 0 || bounds[0] !== 0 || bounds[bounds.length - 1] !== n) {
    fail(op, `${describe("cuSeqlens", cuSeqlens)} ${text()} must start at 0 and end at N = ${n}`);
  }
  for (let s = 1; s < bounds.length; s++) {
    if (bounds[s]! < bounds[s - 1]!) fail(op, `${describe("cuSeqlens", cuSeqlens)} ${text()} decreases at index ${s}`);
  }
  return { n, heads, kvHeads, dim, bounds };
}

/** The first key position query i sees in a document starting at `start`: the window's start, or the document's. */
function firstKey(i: number, start: number, window: number | undefined): number {
  return window === undefined ? start : Math.max(start, i - window + 1);
}

/** out (N, H, D) = softmax(scale * q k^T, causal within each document, within the window if any) v; lse f32 (N, H). */
export function attentionForward(
  store: TensorStore,
  out: Tensor,
  lse: Tensor,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  cuSeqlens: Tensor,
  scale: number,
  options: AttentionOptions = {},
): void {
  const op = "attentionForward";
  const { window, softcap } = options;
  checkAttentionWindow(op, window);
  checkSoftcap(op, softcap);
  const cap = softcap === undefined ? 0 : Math.fround(softcap);
  const { n, heads, kvHeads, dim, bounds } = checkLayout(store, op, q, k, v, cuSeqlens);
  expectFloat(op, "out", out);
  expectShape(op, "out", out, q.shape);
  expectDtype(op, "lse", lse, ["f32"]);
  expectShape(op, "lse", lse, [n, heads]);
  expectFinite(op, "scale", scale);
  const outSlot = store.get(op, "out", out);
  const lseSlot = store.get(op, "lse", lse);
  const ins = inputSlots(store, op, q, k, v);
  expectSeparate(op, [["out", outSlot], ["lse", lseSlot]], ins);
  const [qv, kv, vv] = ins.map(([, slot]) => readFloats(slot)) as [Float32Array, Float32Array, Float32Array];
  const o = outputFloats(outSlot, false);
  const lseOut = f32Data(op, "lse", lseSlot);
  const scale32 = Math.fround(scale);
  const group = heads / kvHeads;
  const maxLen = maxDocLength(bounds);
  const scores = new Float64Array(maxLen);
  const acc = new Float64Array(dim);
  for (let s = 0; s + 1 < bounds.length; s++) {
    const start = bounds[s]!;
    const end = bounds[s + 1]!;
    for (let i = start; i < end; i++) {
      for (let h = 0; h < heads; h++) {
        const qBase = (i * heads + h) * dim;
        const kvHead = Math.floor(h / group);
        const from = firstKey(i, start, window);
        let max = -Infinity;
        for (let j = from; j <= i; j++) {
          const kBase = (j * kvHeads + kvHead) * dim;
          let dot = 0;
          for (let d = 0; d < dim; d++) dot += qv[qBase + d]! * kv[kBase + d]!;
          const raw = scale32 * dot;
          const score = cap > 0 ? cap * Math.tanh(raw / cap) : raw;
          scores[j - start] = score;
          if (score > max) max = score;
        }
        acc.fill(0);
        let sum = 0;
        for (let j = from; j <= i; j++) {
          const p = Math.exp(scores[j - start]! - max);
          sum += p;
          const vBase = (j * kvHeads + kvHead) * dim;
          for (let d = 0; d < dim; d++) acc[d] = acc[d]! + p * vv[vBase + d]!;
        }
        for (let d = 0; d < dim; d++) o[qBase + d] = acc[d]! / sum;
        lseOut[i * heads + h] = max + Math.log(sum);
      }
    }
  }
  writeFloats(outSlot, o);
}

/**
 * dq (N, H, D), dk and dv (N, KV, D), overwritten. Probabilities are recomputed from the saved lse,
 * P_ij = exp(scale q_i.k_j - lse_i); dq and the dk/dv sums over a kv head's query heads run in float64.
 */
export function attentionBackward(
  store: TensorStore,
  dq: Tensor,
  dk: Tensor,
  dv: Tensor,
  dout: Tensor,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  cuSeqlens: Tensor,
  scale: number,
  options: AttentionOptions = {},
): void {
  const op = "attentionBackward";
  const { window, softcap } = options;
  checkAttentionWindow(op, window);
  checkSoftcap(op, softcap);
  const cap = softcap === undefined ? 0 : Math.fround(softcap);
  const { n, heads, kvHeads, dim, bounds } = checkLayout(store, op, q, k, v, cuSeqlens);
  for (const [what, t, like] of [["dq", dq, q], ["dk", dk, k], ["dv", dv, v], ["dout", dout, q], ["out", out, q]] as const) {
    expectFloat(op, what, t);
    expectShape(op, what, t, like.shape);
  }
  expectDtype(op, "lse", lse, ["f32"]);
  expectShape(op, "lse", lse, [n, heads]);
  expectFinite(op, "scale", scale);
  const dqSlot = store.get(op, "dq", dq);
  const dkSlot = store.get(op, "dk", dk);
  const dvSlot = store.get(op, "dv", dv);
  const doutSlot = store.get(op, "dout", dout);
  const outSlot = store.get(op, "out", out);
  const lseSlot = store.get(op, "lse", lse);
  const ins = inputSlots(store, op, q, k, v);
  expectSeparate(op, [["dq", dqSlot], ["dk", dkSlot], ["dv", dvSlot]], [...ins, ["dout", doutSlot], ["out", outSlot], ["lse", lseSlot]]);
  const [qv, kv, vv] = ins.map(([, slot]) => readFloats(slot)) as [Float32Array, Float32Array, Float32Array];
  const g = readFloats(doutSlot);
  const o = readFloats(outSlot);
  const l = f32Data(op, "lse", lseSlot);
  const dqOut = outputFloats(dqSlot, false);
  const dkAcc = new Float64Array(dk.size);
  const dvAcc = new Float64Array(dv.size);
  const dqAcc = new Float64Array(dim);
  const scale32 = Math.fround(scale);
  const group = heads / kvHeads;
  for (let s = 0; s + 1 < bounds.length; s++) {
    const start = bounds[s]!;
    const end = bounds[s + 1]!;
    for (let i = start; i < end; i++) {
      for (let h = 0; h < heads; h++) {
        const qBase = (i * heads + h) * dim;
        const kvHead = Math.floor(h / group);
        const lseI = l[i * heads + h]!;
        let rowDot = 0; // D_i = dout_i . out_i
        for (let d = 0; d < dim; d++) rowDot += g[qBase + d]! * o[qBase + d]!;
        dqAcc.fill(0);
        for (let j = firstKey(i, start, window); j <= i; j++) {
          const kBase = (j * kvHeads + kvHead) * dim;
          let dot = 0;
          let dp = 0;
          for (let d = 0; d < dim; d++) {
            dot += qv[qBase + d]! * kv[kBase + d]!;
            dp += g[qBase + d]! * vv[kBase + d]!;
          }
          // With soft-capping the score is cap * tanh(raw / cap), whose slope is 1 - tanh^2.
          const raw = scale32 * dot;
          const t = cap > 0 ? Math.tanh(raw / cap) : 0;
          const p = Math.exp((cap > 0 ? cap * t : raw) - lseI);
          const ds = p * (dp - rowDot) * scale32 * (cap > 0 ? 1 - t * t : 1);
          for (let d = 0; d < dim; d++) {
            dqAcc[d] = dqAcc[d]! + ds * kv[kBase + d]!;
            dkAcc[kBase + d] = dkAcc[kBase + d]! + ds * qv[qBase + d]!;
            dvAcc[kBase + d] = dvAcc[kBase + d]! + p * g[qBase + d]!;
          }
        }
        for (let d = 0; d < dim; d++) dqOut[qBase + d] = dqAcc[d]!;
      }
    }
  }
  writeFloats(dqSlot, dqOut);
  writeFloats(dkSlot, Float32Array.from(dkAcc));
  writeFloats(dvSlot, Float32Array.from(dvAcc));
}

function inputSlots(store: TensorStore, op: string, q: Tensor, k: Tensor, v: Tensor): [readonly [string, Slot], readonly [string, Slot], readonly [string, Slot]] {
  return [
    ["q", store.get(op, "q", q)],
    ["k", store.get(op, "k", k)],
    ["v", store.get(op, "v", v)],
  ];
}

function maxDocLength(bounds: Int32Array): number {
  let max = 0;
  for (let s = 1; s < bounds.length; s++) max = Math.max(max, bounds[s]! - bounds[s - 1]!);
  return max;
}
