import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { countTrainedTargets, groupByLength, makeBatches, toModelBatch, type BatchOptions } from "../../src/data/batches.ts";
import type { PackedSequence } from "../../src/data/types.ts";
import { IGNORE_INDEX, batchFromDocuments, batchFromRows, type Batch } from "../../src/data/batch.ts";
import { createRng } from "../../src/util/random.ts";

const X = IGNORE_INDEX;

function sequence(ids: number[], trained: number[], docLengths: number[]): PackedSequence {
  return { inputIds: Int32Array.from(ids), trained: Uint8Array.from(trained), docLengths, rows: docLengths.map((_, i) => i) };
}

const plain = (b: Batch): Record<string, unknown> => ({
  ids: Array.from(b.ids),
  positions: Array.from(b.positions),
  cuSeqlens: Array.from(b.cuSeqlens),
  targets: Array.from(b.targets),
  rows: b.rows,
});

// S0: one document; S1: two documents [20 21] [22 23 24]. 21's flag is set but 20 and 22 start documents.
const s0 = sequence([10, 11, 12], [0, 1, 1], [3]);
const s1 = sequence([20, 21, 22, 23, 24], [1, 1, 0, 1, 1], [2, 3]);

test("padded batch: one row per sequence, documents isolated, padding its own segment with no targets", () => {
  const batch = toModelBatch({ sequenceIndices: [0, 1], padded: true }, [s0, s1], 7);
  assert.deepEqual(plain(batch), {
    ids: [10, 11, 12, 7, 7, 20, 21, 22, 23, 24],
    // Padding continues the last document's positions, as transformers counts a padded row.
    positions: [0, 1, 2, 3, 4, 0, 1, 0, 1, 2],
    cuSeqlens: [0, 3, 5, 7, 10],
    // target of t = ids[t+1] when trained and in the same document.
    targets: [11, 12, X, X, X, 21, X, 23, 24, X],
    rows: [[0, 5], [5, 5]],
  });
  assert.equal(countTrainedTargets(batch), 5);
});

test("padded single-document rows are exactly what batchFromRows makes of the HF padded batch", () => {
  const a = sequence([5, 6, 7, 8], [0, 0, 1, 1], [4]);
  const b = sequence([9, 10], [1, 1], [2]);
  const ours = toModelBatch({ sequenceIndices: [1, 0], padded: true }, [a, b], 0);
  const hf = batchFromRows([
    { inputIds: [9, 10, 0, 0], labels: [9, 10, X, X], attentionMask: [1, 1, 0, 0] },
    { inputIds: [5, 6, 7, 8], labels: [X, X, 7, 8] },
  ]);
  assert.deepEqual(plain(ours), plain(hf));
});

test("padding-free batch: one flat row, positions restart per document, the first token of each document is never a target", () => {
  const batch = toModelBatch({ sequenceIndices: [0, 1], padded: false }, [s0, s1]);
  assert.deepEqual(plain(batch), {
    ids: [10, 11, 12, 20, 21, 22, 23, 24],
    positions: [0, 1, 2, 0, 1, 0, 1, 2],
    cuSeqlens: [0, 3, 5, 8],
    targets: [11, 12, X, 21, X, 23, 24, X],
    rows: [[0, 8]],
  });
  const docs = [
    { inputIds: [10, 11, 12], labels: [X, 11, 12] },
    { inputIds: [20, 21], labels: [20, 21] },
    { inputIds: [22, 23, 24], labels: [X, 23, 24] },
  ];
  assert.deepEqual(plain(batch), plain(batchFromDocuments(docs)));
});

test("random batches: no target crosses a boundary; positions are 0 exactly at segment starts", () => {
  const rng = createRng(11);
  const seqs = Array.from({ length: 30 }, () => {
    const docs = Array.from({ length: 1 + Math.floor(rng.uniform() * 4) }, () => 1 + Math.floor(rng.uniform() * 6));
    const n = docs.reduce((a, b) => a + b, 0);
    return sequence(
      Array.from({ length: n }, () => Math.floor(rng.uniform() * 1000)),
      Array.from({ length: n }, () => (rng.uniform() < 0.6 ? 1 : 0)),
      docs,
    );
  });
  for (const padded of [true, false]) {
    for (const plan of makeBatches(seqs, { batchSize: 4, padded, sampling: "random", seed: 3, epoch: 0 })) {
      const b = toModelBatch(plan, seqs);
      const starts = new Set(Array.from(b.cuSeqlens));
      for (let t = 0; t < b.ids.length; t++) {
        if (starts.has(t + 1)) assert.equal(b.targets[t], X, "the last token of a segment has no target");
        else if (b.targets[t] !== X) assert.equal(b.targets[t], b.ids[t + 1]);
      }
      if (!padded) for (let t = 0; t < b.ids.length; t++) assert.equal(b.positions[t] === 0, starts.has(t));
      assert.equal(b.cuSeqlens[b.cuSeqlens.length - 1], b.ids.length);
    }
  }
});

function lengthsToSequences(lengths: number[]): PackedSequence[] {
  return lengths.map((n) => sequence(new Array<number>(n).fill(1), new Array<number>(n).fill(1), [n]));
}

const base: BatchOptions = { batchSize: 2, padded: false, sampling: "sequential", seed: 0, epoch: 0 };

test("length grouping follows transformers' get_length_grouped_indices", () => {
  // 20 sequences, batch 2: megabatches of min(20 / (2*4), 50) = 2 batches = 4 sequences, each sorted longest first.
  const lengths = Array.from({ length: 20 }, (_, i) => ((i * 7) % 11) + 1);
  const identity = Array.from({ length: 20 }, (_, i) => i);
  // Lengths 1 8 4 11 | 7 3 10 6 | 2 9 5 1 | 8 4 11 7 | 3 10 6 2, so MB0 -> 3 1 2 0; MB1 -> 6 4 7 5; MB2 -> 9 10 8 11;
  // MB3 -> 14 12 15 13; MB4 -> 17 18 16 19. The longest (11) heads MB0 and MB3; argmax takes the first: no swap.
  assert.deepEqual(groupByLength(identity, lengths, 2), [3, 1, 2, 0, 6, 4, 7, 5, 9, 10, 8, 11, 14, 12, 15, 13, 17, 18, 16, 19]);
  // Make sequence 9 the longest: it swaps places with the head of MB0.
  lengths[9] = 20;
  assert.deepEqual(groupByLength(identity, lengths, 2), [9, 1, 2, 0, 6, 4, 7, 5, 3, 10, 8, 11, 14, 12, 15, 13, 17, 18, 16, 19]);
});

interface TrainerRun {
  n: number;
  batch: number;
  ga: number;
  epochs: number;
  seed: number;
  data_seed?: number;
  strategy?: "sequential" | "group_by_length";
  batches: number[][];
  lengths: number[];
}
const trainerRuns = (JSON.parse(readFileSync(new URL("../golden/trainer-order/golden.json", import.meta.url), "utf8")) as { trainer: TrainerRun[] }).trainer;

test("every epoch visits the sequences in the order a real Hugging Face Trainer does (transformers 5.17 + accelerate 1.15: random with seed and data_seed, group_by_length, sequential)", () => {
  assert.equal(trainerRuns.length, 5);
  for (const run of trainerRuns) {
    const seqs = lengthsToSequences(run.lengths);
    const ours: number[][] = [];
    for (let epoch = 0; epoch < run.epochs; epoch++) {
      const options: BatchOptions = { batchSize: run.batch, padded: true, sampling: run.strategy ?? "random", seed: run.seed, epoch, gradientAccumulationSteps: run.ga };
      if (run.data_seed !== undefined) options.dataSeed = run.data_seed;
      ours.push(...makeBatches(seqs, options).map((p) => p.sequenceIndices));
    }
    assert.deepEqual(ours, run.batches, JSON.stringify({ ...run, batches: undefined, lengths: undefined }));
  }
});

test("orders are deterministic per seed and epoch; drop_last drops only the smaller last batch", () => {
  const seqs = lengthsToSequences(Array.from({ length: 50 }, (_, i) => 1 + (i % 9)));
  const run = (o: Partial<BatchOptions>): number[][] => makeBatches(seqs, { ...base, batchSize: 4, sampling: "random", seed: 42, ...o }).map((p) => p.sequenceIndices);
  const e0 = run({ epoch: 0 });
  assert.deepEqual(run({ epoch: 0 }), e0);
  assert.notDeepEqual(run({ epoch: 1 }), e0);
  assert.notDeepEqual(run({ seed: 43 }), e0);
  // data_seed replaces the seed for the order: seed 7 with data_seed 42 is seed 42's order.
  assert.deepEqual(run({ seed: 7, dataSeed: 42 }), e0);
  assert.deepEqual(e0.flat().sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i));
  assert.equal(e0.length, 13);
  assert.equal(e0[12]!.length, 2);
  assert.deepEqual(run({ epoch: 0, dropLast: true }), e0.slice(0, 12));
  // Grouped: deterministic too, the longest sequence is in the first batch, and data_seed does not change it
  // (the Trainer's LengthGroupedSampler draws from the generator args.seed seeds).
  const grouped = run({ epoch: 2, sampling: "group_by_length" });
  assert.deepEqual(run({ epoch: 2, sampling: "group_by_length", dataSeed: 5 }), grouped);
  assert.equal(seqs[grouped[0]![0]!]!.inputIds.length, 9);
  assert.notDeepEqual(run({ epoch: 3, sampling: "group_by_length" }), grouped);
});

test("unshuffled, ungrouped batches keep the sequence order", () => {
  const plans = makeBatches(lengthsToSequences([3, 1, 2, 5, 4]), { ...base, padded: true });
  assert.deepEqual(plans, [
    { sequenceIndices: [0, 1], padded: true },
    { sequenceIndices: [2, 3], padded: true },
    { sequenceIndices: [4], padded: true },
  ]);
  assert.throws(() => makeBatches([], { ...base, batchSize: 0 }), /batch size must be a positive integer/);
});
