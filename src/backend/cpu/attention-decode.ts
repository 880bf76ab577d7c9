// Attention of new query tokens against a KV cache for the CPU backend (incremental decoding): the Q new
// tokens sit at positions pastLength.. and see cache rows [0, pastLength + i]; scores and sums in float64.
import type { AttentionOptions, Tensor } from "../types.ts";
import { checkAttentionWindow, checkSoftcap } from "../op-checks.ts";
import { describe, expectFinite, expectFloat, expectRank, expectShape, fail } from "../checks.ts";
import { expectSeparate, outputFloats, readFloatsRange, writeFloats, type TensorStore } from "./store.ts";

/**
 * out (Q, H, D) = softmax(scale * q k^T) v where query i attends cache rows [0, pastLength + i] of
 * kCache and vCache (Tmax, KV, D) (with a window, rows (pastLength + i - window, pastLength + i]); rows past
 * pastLength + Q - 1 are never read.
 */
export function attentionDecode(
  store: TensorStore,
  out: Tensor,
  q: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  pastLength: number,
  scale: number,
  options: AttentionOptions = {},
): void {
  const op = "attentionDecode";
  const { window, softcap } = options;
  checkAttentionWindow(op, window);
  checkSoftcap(op, softcap);
  const cap = softcap === undefined ? 0 : Math.fround(softcap);
  for (const [what, t] of [["out", out], ["q", q], ["kCache", kCache], ["vCache", vCache]] as const) {
    expectFloat(op, what, t);
    expectRank(op, what, t, 3);
  }
  const [nq, heads, dim] = q.shape as [number, number, number];
  const [capacity, kvHeads] = kCache.shape as [number, number, number];
  expectShape(op, "out", out, q.shape);
  expectShape(op, "kCache", kCache, [capacity, kvHeads, dim]);
  expectShape(op, "vCache", vCache, kCache.shape);
  if (kvHeads === 0 || heads % kvHeads !== 0) fail(op, `${describe("q", q)} has ${heads} heads, not a multiple of the ${kvHeads} kv heads of ${describe("kCache", kCache)}`);
  if (!Number.isSafeInteger(pastLength) || pastLength < 0) fail(op, `pastLength is ${pastLength}, expected an integer >= 0`);
  if (pastLength + nq > capacity) {
    fail(op, `pastLength ${pastLength} + ${nq} new tokens exceeds the ${capacity} rows of ${describe("kCache", kCache)}; grow the cache first`);
  }
  expectFinite(op, "scale", scale);
  const outSlot = store.get(op, "out", out);
  const qSlot = store.get(op, "q", q);
  const kSlot = store.get(op, "kCache", kCache);
  const vSlot = store.get(op, "vCache", vCache);
  expectSeparate(op, [["out", outSlot]], [["q", qSlot], ["kCache", kSlot], ["vCache", vSlot]]);
  const total = pastLength + nq;
  // Only the rows in use are read (and converted, for bf16/f16 caches).
  const qv = readFloatsRange(qSlot, 0, q.size);
  const kv = readFloatsRange(kSlot, 0, total * kvHeads * dim);
  const vv = readFloatsRange(vSlot, 0, total * kvHeads * dim);
  const o = outputFloats(outSlot, false);
  const scale32 = Math.fround(scale);
  const group = heads / kvHeads;
  const scores = new Float64Array(total);
  const acc = new Float64Array(dim);
  for (let i = 0; i < nq; i++) {
    const last = pastLength + i;
    const from = window === undefined ? 0 : Math.max(0, last - window + 1);
    for (let h = 0; h < heads; h++) {
      const qBase = (i * heads + h) * dim;
      const kvHead = Math.floor(h / group);
      let max = -Infinity;
      for (let j = from; j <= last; j++) {
        const kBase = (j * kvHeads + kvHead) * dim;
        let dot = 0;
        for (let d = 0; d < dim; d++) dot += qv[qBase + d]! * kv[kBase + d]!;
        const raw = scale32 * dot;
        const score = cap > 0 ? cap * Math.tanh(raw / cap) : raw;
        scores[j] = score;
        if (score > max) max = score;
      }
      acc.fill(0);
      let sum = 0;
      for (let j = from; j <= last; j++) {
        const p = Math.exp(scores[j]! - max);
        sum += p;
        const vBase = (j * kvHeads + kvHead) * dim;
        for (let d = 0; d < dim; d++) acc[d] = acc[d]! + p * vv[vBase + d]!;
      }
      for (let d = 0; d < dim; d++) o[qBase + d] = acc[d]! / sum;
    }
  }
  writeFloats(outSlot, o);
}
