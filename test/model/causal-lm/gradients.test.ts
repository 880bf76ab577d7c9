import { test } from "node:test";
import assert from "node:assert/strict";
import { batchFromDocuments } from "../../../src/data/batch.ts";
import { backward, forward, uploadBatch, type CausalLm } from "../../../src/model/causal-lm/model.ts";
import { finiteDifferenceCheck, lossAndGrads } from "./gradient-check.ts";
import { sampleDocs, tinyModel, writeTiny, TINY } from "./tiny-model.ts";

test("gradient checkpointing gives bit-identical gradients, LoRA dropout included", async () => {
  const { dir, cfg } = await writeTiny();
  const plain = await tinyModel(dir, cfg, { mode: "lora", lora: { dropout: 0.2 }, checkpointing: false });
  const ckpt = await tinyModel(dir, cfg, { mode: "lora", lora: { dropout: 0.2 }, checkpointing: true });
  const a = await lossAndGrads(plain, cfg.vocabSize);
  const b = await lossAndGrads(ckpt, cfg.vocabSize);
  assert.equal(a.loss, b.loss);
  assert.deepEqual(b.grads, a.grads);
  assert.ok(a.grads.some((g) => g !== 0));
});

test("full fine-tuning: every weight's gradient (embedding tied to lm_head, norms, projections) matches finite differences", async () => {
  const { dir, cfg } = await writeTiny();
  await finiteDifferenceCheck(await tinyModel(dir, cfg, { mode: "full" }), cfg.vocabSize, 2);
});

test("full fine-tuning with untied lm_head and Qwen2 biases matches finite differences", async () => {
  const config = { ...TINY, model_type: "qwen2", tie_word_embeddings: false };
  const { dir, cfg } = await writeTiny(config, 2);
  await finiteDifferenceCheck(await tinyModel(dir, cfg, { mode: "full" }), cfg.vocabSize, 2);
});

test("LoRA with rsLoRA and dropout-free trainable token rows matches finite differences", async () => {
  const { dir, cfg } = await writeTiny();
  // Token 5 and 9 appear in the sample documents with high probability; 90 maybe not: rows still train via lm_head.
  const model = await tinyModel(dir, cfg, { mode: "lora", lora: { useRslora: true, trainableTokenIndices: [5, 9, 90] } });
  await finiteDifferenceCheck(model, cfg.vocabSize, 3);
});

test("trainable token rows replace the embedding rows in the input and (tied) output embedding", async () => {
  const { dir, cfg } = await writeTiny();
  const V = cfg.vocabSize;
  const base = await tinyModel(dir, cfg, { mode: "lora", lora: { targetModules: ["q_proj"] } });
  const withRows = await tinyModel(dir, cfg, { mode: "lora", lora: { targetModules: ["q_proj"], trainableTokenIndices: [5, 9] } });
  // Same LoRA values in both (same seed, q_proj tensors come first in the layout); rows start as copies of the base rows.
  const embed = await base.backend.downloadF32(base.params.embed);
  const C = cfg.hiddenSize;
  const flat = await withRows.backend.downloadF32(withRows.params.trainable.params);
  const rowsEntry = withRows.params.trainable.entries.find((e) => e.name.endsWith("trainable_tokens_delta"))!;
  flat.set(embed.subarray(5 * C, 6 * C), rowsEntry.offset);
  flat.set(embed.subarray(9 * C, 10 * C), rowsEntry.offset + C);
  withRows.backend.upload(withRows.params.trainable.params, flat);
  const docs = [{ inputIds: [3, 5, 7, 9, 11, 5] }];
  const logits = async (m: CausalLm): Promise<Float32Array> => {
    await forward(m, uploadBatch(m, batchFromDocuments(docs)));
    return m.backend.downloadF32(m.acts!.logits);
  };
  assert.deepEqual(await logits(withRows), await logits(base));
  // Change token 9's row: every position from the first 9 on changes, and column 9 of the logits everywhere.
  flat[rowsEntry.offset + C] = flat[rowsEntry.offset + C]! + 1;
  withRows.backend.upload(withRows.params.trainable.params, flat);
  const a = await logits(base);
  const b = await logits(withRows);
  assert.equal(a[0 * V + 3], b[0 * V + 3], "token 3 at position 0 does not see token 9");
  assert.notEqual(a[0 * V + 9], b[0 * V + 9], "the tied lm_head uses the new row 9");
  assert.notEqual(a[3 * V + 3], b[3 * V + 3], "position 3 (token 9) uses the new input row");
});

function maxRelativeDiff(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(a[i]!));
  }
  return diff / scale;
}

test("logits computed in chunks of rows (recomputed in the backward) give the same loss and gradients", async () => {
  const { dir, cfg } = await writeTiny({ ...TINY, tie_word_embeddings: false });
  for (const mode of ["lora", "full"] as const) {
    const whole = await lossAndGrads(await tinyModel(dir, cfg, { mode }), cfg.vocabSize);
    // 21 tokens in chunks of 4: five full chunks and a partial one.
    const model = await tinyModel(dir, cfg, { mode, logitsChunkRows: 4 });
    const chunked = await lossAndGrads(model, cfg.vocabSize);
    assert.equal(model.acts?.logits.shape[0], 4);
    assert.ok(Math.abs(chunked.loss - whole.loss) <= 1e-6 * Math.abs(whole.loss), `${mode}: ${chunked.loss} vs ${whole.loss}`);
    const rel = maxRelativeDiff(whole.grads, chunked.grads);
    assert.ok(rel < 1e-5, `${mode}: gradients differ by ${rel} (relative to the largest)`);
  }
});

test("bf16 activations track the f32 reference closely (loss and gradients)", async () => {
  const { dir, cfg } = await writeTiny();
  const ref = await lossAndGrads(await tinyModel(dir, cfg, { mode: "lora" }), cfg.vocabSize);
  const model = await tinyModel(dir, cfg, { mode: "lora", activationDtype: "bf16" });
  const bf16 = await lossAndGrads(model, cfg.vocabSize);
  assert.equal(model.acts?.xs[0]?.dtype, "bf16");
  assert.ok(Math.abs(bf16.loss - ref.loss) < 0.01 * ref.loss, `loss ${bf16.loss} vs ${ref.loss}`);
  // Relative L2 error: bf16 rounds each stored activation by up to 2^-9, through 2 layers and back; near
  // a uniform softmax the gradients are small sums of cancelling terms, so the error grows to a few
  // percent (4.6% measured here, per tensor 2-7%), as for an HF model in bf16 against float32.
  let num = 0;
  let den = 0;
  ref.grads.forEach((g, i) => {
    num += (g - bf16.grads[i]!) ** 2;
    den += g * g;
  });
  const rel = Math.sqrt(num / den);
  assert.ok(rel < 0.08, `gradients differ by ${rel} (relative L2)`);
  assert.ok(rel > 0, "bf16 storage must round something");
});

test("bf16 activations: the GEMMs' bf16 twins of the trainable tensors follow every update of the f32 master", async () => {
  const { dir, cfg } = await writeTiny();
  const model = await tinyModel(dir, cfg, { mode: "lora", activationDtype: "bf16" });
  await lossAndGrads(model, cfg.vocabSize);
  // An optimizer-like update of the master after a step...
  const be = model.backend;
  const values = await be.downloadF32(model.params.trainable.params);
  for (let i = 0; i < values.length; i++) values[i] = values[i]! * 0.5 + 0.01;
  be.upload(model.params.trainable.params, values);
  const updated = await lossAndGrads(model, cfg.vocabSize);
  // ...must give what a model that starts from the updated values gives.
  const fresh = await tinyModel(dir, cfg, { mode: "lora", activationDtype: "bf16" });
  fresh.backend.upload(fresh.params.trainable.params, values);
  const expected = await lossAndGrads(fresh, cfg.vocabSize);
  assert.equal(updated.loss, expected.loss);
  assert.deepEqual(updated.grads, expected.grads);
});

test("a smaller batch after a larger one runs in views of the larger activations, with identical results", async () => {
  const { dir, cfg } = await writeTiny();
  const small = (): { inputIds: number[]; labels: number[] }[] => sampleDocs(cfg.vocabSize, 9).slice(0, 2);
  const run = async (model: CausalLm, docs: { inputIds: number[]; labels: number[] }[]): Promise<{ loss: number; grads: Float32Array }> => {
    const be = model.backend;
    be.fill(model.params.trainable.grads, 0);
    const batch = uploadBatch(model, batchFromDocuments(docs));
    const { lossSum, tokens } = await forward(model, batch, { training: true });
    await backward(model, batch, 1 / tokens);
    return { loss: lossSum / tokens, grads: await be.downloadF32(model.params.trainable.grads) };
  };
  const reused = await tinyModel(dir, cfg, { mode: "lora", lora: { dropout: 0.1 }, checkpointing: true });
  await run(reused, sampleDocs(cfg.vocabSize));
  const root = reused.acts?.root;
  const a = await run(reused, small());
  assert.equal(reused.acts?.root, root, "the larger allocation is reused");
  assert.ok((reused.acts?.N ?? 0) < (root?.N ?? 0));
  const fresh = await tinyModel(dir, cfg, { mode: "lora", lora: { dropout: 0.1 }, checkpointing: true });
  // Same dropout stream position: the fresh model draws the first batch's masks too.
  await run(fresh, sampleDocs(cfg.vocabSize));
  fresh.acts?.free();
  fresh.acts = null;
  const b = await run(fresh, small());
  const actsOf = (m: CausalLm): CausalLm["acts"] => m.acts; // read after run() set it again
  assert.notEqual(actsOf(fresh)?.root, root);
  assert.equal(a.loss, b.loss);
  assert.deepEqual(a.grads, b.grads);
});

test("a sliding window shorter than the documents (Mistral, window 2): LoRA gradients match finite differences", async () => {
  const { dir, cfg } = await writeTiny({ ...TINY, model_type: "mistral", sliding_window: 2 });
  assert.deepEqual(cfg.layerWindows, [2, 2]);
  await finiteDifferenceCheck(await tinyModel(dir, cfg, { mode: "lora", lora: { targetModules: ["q_proj", "k_proj", "v_proj"] } }), cfg.vocabSize, 3);
});
