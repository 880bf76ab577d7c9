// attentionDecode against the full causal attentionForward: a sequence fed token by token, or in chunks,
// through a KV cache gives the same outputs; GQA, bf16 caches, unused cache rows never read, argument checks.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Tensor } from "../../../src/backend/types.ts";
import { assertClose, assertInternal, backend, intsOf, randn, randnBf16, rng, tensorOf } from "./helpers.ts";

const be = backend();
const r = rng(77);

interface Case {
  n: number;
  heads: number;
  kvHeads: number;
  dim: number;
  /** How the n tokens arrive: chunk sizes summing to n (all 1 = token by token). */
  chunks: number[];
  /** Sliding window; the cache rows that fall out of it are poisoned with NaN as decoding moves on. */
  window?: number;
}

const opts = (c: Case): { window?: number } => (c.window === undefined ? {} : { window: c.window });

const cases: Case[] = [
  { n: 6, heads: 1, kvHeads: 1, dim: 4, chunks: [1, 1, 1, 1, 1, 1] },
  { n: 9, heads: 4, kvHeads: 2, dim: 8, chunks: [1, 1, 1, 1, 1, 1, 1, 1, 1] },
  { n: 10, heads: 4, kvHeads: 1, dim: 6, chunks: [4, 1, 3, 1, 1] },
  { n: 12, heads: 6, kvHeads: 3, dim: 16, chunks: [12] },
  { n: 11, heads: 4, kvHeads: 2, dim: 8, chunks: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], window: 3 },
  { n: 13, heads: 2, kvHeads: 1, dim: 4, chunks: [5, 1, 4, 1, 2], window: 4 },
  { n: 5, heads: 2, kvHeads: 2, dim: 4, chunks: [2, 1, 2], window: 1 },
];

/** The reference: one document, causal, through the training op. */
function fullForward(qv: Float32Array, kv: Float32Array, vv: Float32Array, c: Case, scale: number): Tensor {
  const out = be.alloc("f32", [c.n, c.heads, c.dim]);
  be.attentionForward(
    out,
    be.alloc("f32", [c.n, c.heads]),
    tensorOf(be, [c.n, c.heads, c.dim], qv),
    tensorOf(be, [c.n, c.kvHeads, c.dim], kv),
    tensorOf(be, [c.n, c.kvHeads, c.dim], vv),
    intsOf(be, [0, c.n]),
    scale,
    opts(c),
  );
  return out;
}

/** Feeds the chunks through a cache of `extra` spare rows (NaN-filled: they must never be read). */
async function decodeInChunks(qv: Float32Array, kv: Float32Array, vv: Float32Array, c: Case, scale: number, dtype: "f32" | "bf16", extra = 3): Promise<Float32Array> {
  const capacity = c.n + extra;
  const kCache = be.alloc(dtype, [capacity, c.kvHeads, c.dim]);
  const vCache = be.alloc(dtype, [capacity, c.kvHeads, c.dim]);
  be.fill(kCache, NaN);
  be.fill(vCache, NaN);
  const kAll = tensorOf(be, [c.n, c.kvHeads, c.dim], kv, dtype);
  const vAll = tensorOf(be, [c.n, c.kvHeads, c.dim], vv, dtype);
  const qAll = tensorOf(be, [c.n, c.heads, c.dim], qv, dtype);
  const result = new Float32Array(c.n * c.heads * c.dim);
  let past = 0;
  for (const q of c.chunks) {
    be.copy(be.rows(kCache, past, q), be.rows(kAll, past, q));
    be.copy(be.rows(vCache, past, q), be.rows(vAll, past, q));
    const out = be.alloc(dtype, [q, c.heads, c.dim]);
    be.attentionDecode(out, be.rows(qAll, past, q), kCache, vCache, past, scale, opts(c));
    result.set(await be.downloadF32(out), past * c.heads * c.dim);
    past += q;
    // Rows no later query can see (every later position is >= past) must never be read again.
    const stale = c.window === undefined ? 0 : Math.max(0, past - c.window + 1);
    if (stale > 0) {
      be.fill(be.rows(kCache, 0, stale), NaN);
      be.fill(be.rows(vCache, 0, stale), NaN);
    }
  }
  assert.equal(past, c.n);
  return result;
}

void test("decoding token by token or in chunks through the cache equals the full causal forward", async () => {
  for (const c of cases) {
    const qv = randn(r, c.n * c.heads * c.dim);
    const kv = randn(r, c.n * c.kvHeads * c.dim);
    const vv = randn(r, c.n * c.kvHeads * c.dim);
    const scale = 1 / Math.sqrt(c.dim);
    const expected = await be.downloadF32(fullForward(qv, kv, vv, c, scale));
    const actual = await decodeInChunks(qv, kv, vv, c, scale, "f32");
    // Same float64 sums over the same keys; only the final float32 rounding could differ.
    assertClose(actual, expected, 1e-7, `decode ${JSON.stringify(c)}`);
    assert.ok(actual.every(Number.isFinite), "a NaN spare cache row leaked into the output");
  }
});

void test("attentionDecode on a bf16 cache equals the full forward on the same bf16 values", async () => {
  const c = cases[2]!;
  const [qv, kv, vv] = [c.heads, c.kvHeads, c.kvHeads].map((h) => randnBf16(r, c.n * h * c.dim)) as [Float32Array, Float32Array, Float32Array];
  const expected = await be.downloadF32(fullForward(qv, kv, vv, c, 0.4));
  const actual = await decodeInChunks(qv, kv, vv, c, 0.4, "bf16");
  // The decode output is stored in bf16: half a bf16 ulp (2^-9 relative) per element at most.
  assertClose(actual, expected, 4e-3, "bf16 decode");
});

void test("attentionDecode with a full cache: the last row is usable, one more token is an error", () => {
  const kCache = be.alloc("f32", [4, 2, 4]);
  const vCache = be.alloc("f32", [4, 2, 4]);
  be.fill(kCache, 0.5);
  be.fill(vCache, 2);
  const out = be.alloc("f32", [1, 4, 4]);
  const q = be.alloc("f32", [1, 4, 4]);
  be.fill(q, 1);
  be.attentionDecode(out, q, kCache, vCache, 3, 0.5);
  const threeHeads = be.alloc("f32", [1, 3, 4]);
  const calls: [() => void, string[]][] = [
    [() => { be.attentionDecode(out, q, kCache, vCache, 4, 0.5); }, ["pastLength 4", "exceeds the 4 rows"]],
    [() => { be.attentionDecode(out, q, kCache, vCache, -1, 0.5); }, ["pastLength is -1"]],
    [() => { be.attentionDecode(be.alloc("f32", [1, 3, 4]), threeHeads, kCache, vCache, 0, 0.5); }, ["not a multiple"]],
    [() => { be.attentionDecode(out, q, kCache, be.alloc("f32", [4, 2, 5]), 0, 0.5); }, ["vCache"]],
    [() => { be.attentionDecode(be.rows(kCache, 0, 1), be.view(be.rows(kCache, 1, 1), [1, 2, 4]), kCache, vCache, 0, 0.5); }, ["shares storage"]],
  ];
  for (const [call, fragments] of calls) assertInternal(call, ...fragments);
});

void test("every query sees the same keys: equal values give the mean of v over the visible rows", async () => {
  // Constant keys make every score equal, so query i's output is the mean of v rows 0..past+i.
  const kCache = be.alloc("f32", [5, 1, 2]);
  be.fill(kCache, 1);
  const vCache = tensorOf(be, [5, 1, 2], Float32Array.from([0, 10, 2, 20, 4, 30, 6, 40, 1000, 1000]));
  const q = be.alloc("f32", [2, 1, 2]);
  be.fill(q, 0.3);
  const out = be.alloc("f32", [2, 1, 2]);
  be.attentionDecode(out, q, kCache, vCache, 2, 1);
  // query 0 at position 2 sees rows 0..2, query 1 at position 3 sees rows 0..3; row 4 is unused.
  assertClose(await be.downloadF32(out), [2, 20, 3, 25], 1e-7, "means");
});
