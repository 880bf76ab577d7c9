// The layer residency seam (what ZeRO-3 / FSDP will hang their gather and release on): every use of a layer's
// frozen weights happens between acquire(l) and release(l). Proven by poisoning the weights with NaN at
// release and restoring them at acquire: the loss and gradients stay those of a model without residency,
// with and without gradient checkpointing, and the calls come in the order sharding needs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { batchFromDocuments } from "../../../src/data/batch.ts";
import { backward, forward, uploadBatch, type CausalLm } from "../../../src/model/causal-lm/model.ts";
import { PROJECTIONS } from "../../../src/hf/weights.ts";
import type { Tensor } from "../../../src/backend/types.ts";
import { sampleDocs, tinyModel, writeTiny } from "./tiny-model.ts";

async function lossAndGrads(model: CausalLm, V: number, layerDone?: (l: number) => void): Promise<{ loss: number; grads: Float32Array }> {
  const be = model.backend;
  be.fill(model.params.trainable.grads, 0);
  const batch = uploadBatch(model, batchFromDocuments(sampleDocs(V)));
  const { lossSum, tokens } = await forward(model, batch, { training: true });
  await backward(model, batch, 1 / tokens, layerDone);
  return { loss: lossSum / tokens, grads: await be.downloadF32(model.params.trainable.grads) };
}

/** A residency that keeps each layer's frozen weights NaN while the layer is released (they never change). */
async function poisoning(model: CausalLm, events: string[]): Promise<void> {
  const be = model.backend;
  const frozen = (l: number): Tensor[] => {
    const layer = model.params.layers[l]!;
    return [layer.inputNorm, layer.postNorm, ...PROJECTIONS.map((p) => layer.proj[p].weight).filter((w): w is Tensor => w !== null)];
  };
  const saved = new Map<Tensor, Float32Array>();
  for (let l = 0; l < model.params.layers.length; l++) {
    for (const t of frozen(l)) {
      saved.set(t, await be.downloadF32(t));
      be.fill(t, Number.NaN); // every layer starts released
    }
  }
  model.residency = {
    acquire: async (l, next) => {
      events.push(`acquire ${l}${next === undefined ? "" : ` (next ${next})`}`);
      for (const t of frozen(l)) be.upload(t, saved.get(t)!);
      await Promise.resolve();
    },
    release: (l) => {
      events.push(`release ${l}`);
      for (const t of frozen(l)) be.fill(t, Number.NaN);
    },
  };
}

for (const checkpointing of [false, true]) {
  test(`residency: a layer's weights are used only between acquire and release (checkpointing ${checkpointing ? "on" : "off"})`, async () => {
    const { dir, cfg } = await writeTiny();
    const plain = await tinyModel(dir, cfg, { mode: "lora", lora: { dropout: 0.2 }, checkpointing });
    const sharded = await tinyModel(dir, cfg, { mode: "lora", lora: { dropout: 0.2 }, checkpointing });
    const events: string[] = [];
    await poisoning(sharded, events);
    const a = await lossAndGrads(plain, cfg.vocabSize);
    const b = await lossAndGrads(sharded, cfg.vocabSize, (l) => events.push(`done ${l}`));
    assert.ok(Number.isFinite(b.loss));
    assert.equal(b.loss, a.loss);
    assert.deepEqual(b.grads, a.grads);
    // Forward 0..L-1, then backward L-1..0, each layer released before its gradients are reported done; each
    // acquire names the layer that comes next (the backward starts with the forward's last layer).
    assert.deepEqual(events, ["acquire 0 (next 1)", "release 0", "acquire 1 (next 1)", "release 1", "acquire 1 (next 0)", "release 1", "done 1", "acquire 0", "release 0", "done 0"]);
  });
}
