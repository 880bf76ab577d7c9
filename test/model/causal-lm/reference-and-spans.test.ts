// What DPO needs from the model: a forward with the adapters off that is the base model's (PEFT's
// disable_adapter), per-token losses, and a backward whose gradient weighs each span's token losses.
import { test } from "node:test";
import assert from "node:assert/strict";
import { batchFromDocuments, IGNORE_INDEX } from "../../../src/data/batch.ts";
import { backward, forward, uploadBatch, type CausalLm } from "../../../src/model/causal-lm/model.ts";
import type { SpanScale } from "../../../src/model/types.ts";
import { sampleDocs, tinyModel, writeTiny } from "./tiny-model.ts";

const docs = (V: number): { inputIds: number[]; labels: number[] }[] => sampleDocs(V).slice(0, 2);

async function grads(model: CausalLm, d: { inputIds: number[]; labels: number[] }[], spans?: SpanScale[]): Promise<Float32Array> {
  const be = model.backend;
  be.fill(model.params.trainable.grads, 0);
  const batch = uploadBatch(model, batchFromDocuments(d));
  await forward(model, batch, { training: true });
  await backward(model, batch, 1, undefined, spans);
  return be.downloadF32(model.params.trainable.grads);
}

void test("adapters off: token losses are the base model's, and the adapted pass after it is unchanged", async () => {
  const { dir, cfg } = await writeTiny();
  const adapted = await tinyModel(dir, cfg, { mode: "lora", lora: { dropout: 0.1 }, checkpointing: true });
  const base = await tinyModel(dir, cfg, { mode: "lora", checkpointing: true });
  const d = docs(cfg.vocabSize);
  const batchA = uploadBatch(adapted, batchFromDocuments(d));
  const off = await forward(adapted, batchA, { adapters: false });
  // The base alone: a second model with every LoRA value zero (B = 0 adds exactly nothing).
  base.backend.fill(base.params.trainable.params, 0);
  const ref = await forward(base, uploadBatch(base, batchFromDocuments(d)));
  assert.deepEqual(off.tokenLosses, ref.tokenLosses);
  const on = await forward(adapted, batchA, { training: false });
  assert.notDeepEqual(on.tokenLosses, off.tokenLosses, "the adapters change the losses");
  const again = await forward(adapted, batchA, { training: false });
  assert.deepEqual(again.tokenLosses, on.tokenLosses);
  assert.equal(off.tokenLosses.length, batchA.N);
  assert.ok(Math.abs(off.lossSum - off.tokenLosses.reduce((a, b) => a + b, 0)) < 1e-9);
});

void test("span scales: the gradient is the scaled sum of each document's own gradient", async () => {
  const { dir, cfg } = await writeTiny();
  const model = await tinyModel(dir, cfg, { mode: "lora" });
  const d = docs(cfg.vocabSize);
  const n0 = d[0]!.inputIds.length;
  const n1 = d[1]!.inputIds.length;
  const only = (k: number): { inputIds: number[]; labels: number[] }[] => d.map((doc, i) => (i === k ? doc : { ...doc, labels: doc.labels.map(() => IGNORE_INDEX) }));
  const g0 = await grads(model, only(0));
  const g1 = await grads(model, only(1));
  const mixed = await grads(model, d, [
    { start: 0, count: n0, scale: 0.3 },
    { start: n0, count: n1, scale: -1.7 },
  ]);
  let worst = 0;
  let size = 0;
  for (let i = 0; i < mixed.length; i++) {
    worst = Math.max(worst, Math.abs(mixed[i]! - (0.3 * g0[i]! - 1.7 * g1[i]!)));
    size = Math.max(size, Math.abs(mixed[i]!));
  }
  assert.ok(size > 1e-3, "a gradient to compare");
  assert.ok(worst < 1e-5 * size, `worst difference ${worst} of ${size}`);
});
