import { test } from "node:test";
import assert from "node:assert/strict";
import { noPacking, packBfd, packWrapped } from "../../src/data/pack.ts";
import type { PackedSequence, TokenizedExample } from "../../src/data/types.ts";
import { createRng } from "../../src/util/random.ts";

function example(row: number, ids: number[], trained?: number[]): TokenizedExample {
  return { inputIds: Int32Array.from(ids), trained: Uint8Array.from(trained ?? ids.map(() => 1)), row, truncatedTokens: 0 };
}

const view = (seqs: PackedSequence[]): { ids: number[]; trained: number[]; docs: number[]; rows: number[] }[] =>
  seqs.map((s) => ({ ids: Array.from(s.inputIds), trained: Array.from(s.trained), docs: s.docLengths, rows: s.rows }));

test("BFD: TRL's docstring example", () => {
  // trl/data_utils.py `pack_dataset` docstring, strategy "bfd", seq_length=4.
  const examples = [example(0, [1, 2, 3, 4, 5]), example(1, [6, 7]), example(2, [8, 9, 10]), example(3, [11])];
  const packed = packBfd(examples, 4, { overflow: "truncate" });
  assert.deepEqual(
    packed.map((s) => Array.from(s.inputIds)),
    [[1, 2, 3, 4], [8, 9, 10, 11], [6, 7]],
  );
  assert.deepEqual(packed.map((s) => s.docLengths), [[4], [3, 1], [2]]);
  assert.deepEqual(packed.map((s) => s.rows), [[0], [2, 3], [1]]);
});

test("BFD: the oldest bin with the best space wins, by when it reached that space (TRL's FIFO)", () => {
  // capacity 10, lengths [4,5,2,1,7]; sorted: 7(r4) 5(r1) 4(r0) 2(r2) 1(r3).
  // 7 -> bin0 (3 left); 5 -> new bin1 (5 left); 4 -> bin1 (1 left); 2 -> bin0 (1 left).
  // Both bins now have 1 left; bin1 got there first, so 1 goes to bin1 (a lowest-index rule would pick bin0).
  const lengths = [4, 5, 2, 1, 7];
  const examples = lengths.map((n, row) => example(row, Array.from({ length: n }, (_, t) => row * 100 + t)));
  const packed = packBfd(examples, 10, { overflow: "truncate" });
  assert.deepEqual(packed.map((s) => s.rows), [[4, 2], [1, 0, 3]]);
  assert.deepEqual(packed.map((s) => s.docLengths), [[7, 2], [5, 4, 1]]);
  assert.deepEqual(Array.from(packed[1]!.inputIds), [100, 101, 102, 103, 104, 0, 1, 2, 3, 300]);
});

test("BFD: trained flags travel with their tokens; empty examples are dropped", () => {
  const examples = [example(0, [1, 2, 3], [0, 1, 1]), example(1, []), example(2, [4, 5], [1, 0])];
  const packed = packBfd(examples, 5, { overflow: "truncate" });
  assert.deepEqual(view(packed), [{ ids: [1, 2, 3, 4, 5], trained: [0, 1, 1, 1, 0], docs: [3, 2], rows: [0, 2] }]);
});

test("BFD split: a long example becomes consecutive fragments, packed as separate items", () => {
  const a = example(0, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const b = example(1, [20, 21, 22]);
  // Items (4,4,2 from a; 3 from b) sorted: a0 a1 b a2. b opens bin 2 (1 left); a2 does not fit there.
  assert.deepEqual(view(packBfd([a, b], 4, { overflow: "split" })), [
    { ids: [0, 1, 2, 3], trained: [1, 1, 1, 1], docs: [4], rows: [0] },
    { ids: [4, 5, 6, 7], trained: [1, 1, 1, 1], docs: [4], rows: [0] },
    { ids: [20, 21, 22], trained: [1, 1, 1], docs: [3], rows: [1] },
    { ids: [8, 9], trained: [1, 1], docs: [2], rows: [0] },
  ]);
  assert.deepEqual(view(packBfd([a, b], 4, { overflow: "truncate" })), [
    { ids: [0, 1, 2, 3], trained: [1, 1, 1, 1], docs: [4], rows: [0] },
    { ids: [20, 21, 22], trained: [1, 1, 1], docs: [3], rows: [1] },
  ]);
});

/** Plain quadratic best-fit-decreasing: scan every bin, least room first, ties to the bin that has had that room longest. */
function referenceBfd(lengths: number[], capacity: number): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b]! - lengths[a]!);
  const bins: { items: number[]; room: number; since: number }[] = [];
  order.forEach((i, step) => {
    let best: (typeof bins)[number] | undefined;
    for (const bin of bins) {
      if (bin.room < lengths[i]!) continue;
      if (best === undefined || bin.room < best.room || (bin.room === best.room && bin.since < best.since)) best = bin;
    }
    if (best === undefined) {
      best = { items: [], room: capacity, since: 0 };
      bins.push(best);
    }
    best.items.push(i);
    best.room -= lengths[i]!;
    best.since = step;
  });
  return bins.map((b) => b.items);
}

function randomExamples(seed: number, n: number, maxLen: number): TokenizedExample[] {
  const rng = createRng(seed);
  return Array.from({ length: n }, (_, row) => {
    const len = Math.floor(rng.uniform() * (maxLen + 1));
    return example(
      row,
      Array.from({ length: len }, (_, t) => row * 1000 + t),
      Array.from({ length: len }, () => (rng.uniform() < 0.7 ? 1 : 0)),
    );
  });
}

test("BFD on random data: matches a quadratic reference; every example once; no bin over capacity; deterministic", () => {
  for (const [seed, capacity] of [
    [1, 7],
    [2, 64],
    [3, 100],
    [4, 1],
  ] as const) {
    const examples = randomExamples(seed, 400, Math.floor(capacity * 1.5));
    const packed = packBfd(examples, capacity, { overflow: "truncate" });
    const nonEmpty = examples.filter((e) => e.inputIds.length > 0);
    const expected = referenceBfd(nonEmpty.map((e) => Math.min(e.inputIds.length, capacity)), capacity).map((bin) => bin.map((i) => nonEmpty[i]!.row));
    assert.deepEqual(packed.map((s) => s.rows), expected, `seed ${seed}`);
    assert.deepEqual(packed.flatMap((s) => s.rows).sort((a, b) => a - b), nonEmpty.map((e) => e.row));
    for (const seq of packed) {
      assert.ok(seq.inputIds.length <= capacity);
      assert.equal(seq.docLengths.reduce((a, b) => a + b, 0), seq.inputIds.length);
      let at = 0;
      seq.rows.forEach((row, d) => {
        const source = examples[row]!;
        const length = seq.docLengths[d]!;
        assert.deepEqual(seq.inputIds.subarray(at, at + length), source.inputIds.subarray(0, length));
        assert.deepEqual(seq.trained.subarray(at, at + length), source.trained.subarray(0, length));
        at += length;
      });
    }
    // Bins are created by their first (largest-so-far) item, so first documents never grow.
    for (let b = 1; b < packed.length; b++) assert.ok(packed[b]!.docLengths[0]! <= packed[b - 1]!.docLengths[0]!);
    assert.deepEqual(view(packBfd(examples, capacity, { overflow: "truncate" })), view(packed));
  }
});

test("BFD split on random data: every token lands exactly once", () => {
  const examples = randomExamples(9, 300, 50);
  const packed = packBfd(examples, 16, { overflow: "split" });
  const seen = packed.flatMap((s) => Array.from(s.inputIds)).sort((a, b) => a - b);
  const all = examples.flatMap((e) => Array.from(e.inputIds)).sort((a, b) => a - b);
  assert.deepEqual(seen, all);
  assert.ok(packed.every((s) => s.inputIds.length <= 16 && s.docLengths.every((d) => d <= 16)));
});

test("BFD chunkSize: bins never mix rows of different chunks (TRL's 1000-row map batches)", () => {
  const examples = randomExamples(5, 250, 30);
  const chunked = packBfd(examples, 32, { overflow: "truncate", chunkSize: 100 });
  const expected = [0, 100, 200].flatMap((start) => packBfd(examples.slice(start, start + 100), 32, { overflow: "truncate" }));
  assert.deepEqual(view(chunked), view(expected));
  assert.ok(packBfd(examples, 32, { overflow: "truncate" }).length <= chunked.length);
  assert.throws(() => packBfd(examples, 0, { overflow: "truncate" }), /max_length must be a positive integer/);
});

test("wrapped: concatenate and cut; TRL keeps the short last chunk, the legacy dataset drops it", () => {
  const examples = [example(0, [1, 2, 3], [1, 0, 1]), example(1, [4, 5, 6, 7, 8]), example(2, [9, 10], [0, 0])];
  const kept = packWrapped(examples, 4, { dropRemainder: false });
  assert.deepEqual(view(kept), [
    { ids: [1, 2, 3, 4], trained: [1, 0, 1, 1], docs: [4], rows: [0, 1] },
    { ids: [5, 6, 7, 8], trained: [1, 1, 1, 1], docs: [4], rows: [1] },
    { ids: [9, 10], trained: [0, 0], docs: [2], rows: [2] },
  ]);
  assert.deepEqual(view(packWrapped(examples, 4, { dropRemainder: true })), view(kept).slice(0, 2));
  // An exact multiple leaves no remainder either way.
  assert.equal(packWrapped(examples, 5, { dropRemainder: true }).length, 2);
  assert.equal(packWrapped(examples, 5, { dropRemainder: false }).length, 2);
  // Chunks are wrapped separately.
  assert.deepEqual(
    packWrapped(examples, 4, { dropRemainder: false, chunkSize: 2 }).map((s) => Array.from(s.inputIds)),
    [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]],
  );
  assert.deepEqual(
    packWrapped(examples, 3, { dropRemainder: false, chunkSize: 2 }).map((s) => Array.from(s.inputIds)),
    [[1, 2, 3], [4, 5, 6], [7, 8], [9, 10]],
  );
});

test("no packing: one single-document sequence per non-empty example", () => {
  const examples = [example(0, [1, 2], [0, 1]), example(1, []), example(2, [3, 4, 5])];
  assert.deepEqual(view(noPacking(examples)), [
    { ids: [1, 2], trained: [0, 1], docs: [2], rows: [0] },
    { ids: [3, 4, 5], trained: [1, 1, 1], docs: [3], rows: [2] },
  ]);
});
