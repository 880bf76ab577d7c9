// The loss and gradients of a tiny model on the sample documents, and central differences of its f32 forward.
import assert from "node:assert/strict";
import { batchFromDocuments } from "../../../src/data/batch.ts";
import { backward, forward, uploadBatch, type CausalLm } from "../../../src/model/causal-lm/model.ts";
import { createRng } from "../../../src/util/random.ts";
import { sampleDocs } from "./tiny-model.ts";

/**
 * With `dropoutSeed` the dropout stream restarts from that seed before every forward, so each forward (and the
 * finite differences' probes) draws the same masks.
 */
export async function lossAndGrads(model: CausalLm, V: number, dropoutSeed?: number): Promise<{ loss: number; grads: Float32Array }> {
  const be = model.backend;
  be.fill(model.params.trainable.grads, 0);
  if (dropoutSeed !== undefined) model.dropoutRng = createRng(dropoutSeed);
  const batch = uploadBatch(model, batchFromDocuments(sampleDocs(V)));
  const { lossSum, tokens } = await forward(model, batch, { training: true });
  await backward(model, batch, 1 / tokens);
  return { loss: lossSum / tokens, grads: await be.downloadF32(model.params.trainable.grads) };
}

async function lossOnly(model: CausalLm, V: number, dropoutSeed?: number): Promise<number> {
  if (dropoutSeed !== undefined) model.dropoutRng = createRng(dropoutSeed);
  const batch = uploadBatch(model, batchFromDocuments(sampleDocs(V)));
  const { lossSum, tokens } = await forward(model, batch, { training: true });
  return lossSum / tokens;
}

/**
 * Central differences of the f32 forward at a few parameters of every tensor. Step 1e-3 keeps the
 * curvature error small (at 1e-2 it reaches ~30% on LoRA B here); the f32 loss noise (~5e-7) over
 * 2e-3 is ~2.5e-4, hence 3e-4 absolute or 2% relative. DoRA's row norms are constants of the backward (PEFT
 * detaches them), so the probes keep the norms of the unperturbed parameters.
 */
export async function finiteDifferenceCheck(model: CausalLm, V: number, picks: number, dropoutSeed?: number): Promise<void> {
  const be = model.backend;
  const { grads } = await lossAndGrads(model, V, dropoutSeed);
  model.linearScratch.reuseDoraNorms = true;
  const params = await be.downloadF32(model.params.trainable.params);
  const step = 1e-3;
  let checked = 0;
  for (const entry of model.params.trainable.entries) {
    for (let k = 0; k < picks; k++) {
      const i = entry.offset + Math.floor(((k + 0.5) / picks) * entry.size);
      const original = params[i]!;
      params[i] = original + step;
      be.upload(model.params.trainable.params, params);
      const up = await lossOnly(model, V, dropoutSeed);
      params[i] = original - step;
      be.upload(model.params.trainable.params, params);
      const down = await lossOnly(model, V, dropoutSeed);
      params[i] = original;
      be.upload(model.params.trainable.params, params);
      const numeric = (up - down) / (2 * step);
      const analytic = grads[i]!;
      const ok = Math.abs(numeric - analytic) <= Math.max(3e-4, 0.02 * Math.abs(numeric));
      assert.ok(ok, `${entry.name}[${i - entry.offset}]: analytic ${analytic} vs numeric ${numeric}`);
      checked++;
    }
  }
  model.linearScratch.reuseDoraNorms = false;
  assert.ok(checked > 0);
}
