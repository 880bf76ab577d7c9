// NEFTune's noise as transformers' neftune_post_forward_hook adds it: uniform in [-m, m] with
// m = alpha / sqrt(L * d), L the length of the token's row and d the hidden size. The noise is read off the
// model's first activation (embeddings + noise) minus a forward without NEFTune, and checked against draws
// made here from the same generator and seed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { batchFromDocuments, batchFromRows, type Batch } from "../../../src/data/batch.ts";
import { forward, freeBatch, uploadBatch } from "../../../src/model/causal-lm/model.ts";
import { createRng } from "../../../src/util/random.ts";
import { tinyModel, writeTiny } from "./tiny-model.ts";

// L as transformers sees it: the padded length T of a (B, T) batch for every row; the whole flat row of a
// padding-free packed batch (TRL's position_ids layout, one row of all tokens).
const CASES: [string, (ids: (n: number, seed: number) => number[]) => Batch, [number, number][]][] = [
  ["padded rows of 9 and 5 tokens (T = 9)", (ids) => batchFromRows([{ inputIds: ids(9, 1) }, { inputIds: [...ids(5, 2), 0, 0, 0, 0], attentionMask: [1, 1, 1, 1, 1, 0, 0, 0, 0] }]), [[0, 9], [9, 9]]],
  ["two documents packed padding-free (one row of 14)", (ids) => batchFromDocuments([{ inputIds: ids(9, 1) }, { inputIds: ids(5, 2) }]), [[0, 14]]],
];

for (const [what, makeBatch, rows] of CASES) void test(`NEFTune noise: uniform in ±alpha/sqrt(L*d), ${what}, drawn in order`, async () => {
  const { dir, cfg } = await writeTiny();
  const model = await tinyModel(dir, cfg, { mode: "lora", seed: 2 });
  const be = model.backend;
  const d = cfg.hiddenSize;
  const ids = (n: number, seed: number): number[] => Array.from({ length: n }, (_, i) => 3 + ((i * 7 + seed) % (cfg.vocabSize - 3)));
  const batch = makeBatch(ids);
  const embedded = async (neftune: { alpha: number; rng: ReturnType<typeof createRng> } | undefined): Promise<Float32Array> => {
    const device = uploadBatch(model, batch);
    await forward(model, device, { training: false, ...(neftune === undefined ? {} : { neftune }) });
    const x0 = await be.downloadF32(model.acts!.xs[0]!);
    freeBatch(model, device);
    return x0;
  };
  const clean = await embedded(undefined);
  const alpha = 5;
  const noisy = await embedded({ alpha, rng: createRng(123) });
  const draws = createRng(123);
  let worstUlps = 0;
  for (const [start, length] of rows) {
    const magnitude = alpha / Math.sqrt(length * d);
    let largest = 0;
    for (let i = start * d; i < (start + length) * d; i++) {
      const expected = (2 * draws.uniform() - 1) * magnitude;
      const noise = noisy[i]! - clean[i]!;
      largest = Math.max(largest, Math.abs(noise));
      // The sum is rounded to float32 once: within an ulp of the larger term.
      const ulp = Math.max(Math.abs(noisy[i]!), Math.abs(clean[i]!)) * 2 ** -23;
      worstUlps = Math.max(worstUlps, Math.abs(noise - expected) / ulp);
    }
    assert.ok(largest <= magnitude * (1 + 1e-6), `row of ${length}: noise ${largest} above alpha/sqrt(L*d) = ${magnitude}`);
    assert.ok(largest > 0.9 * magnitude, `row of ${length}: noise ${largest} far below alpha/sqrt(L*d) = ${magnitude}`);
  }
  assert.ok(worstUlps <= 1.01, `noise differs from the expected draws by ${worstUlps} ulp`);
});
