// DPO against torch + PEFT (test/golden/dpo, written by tools/golden/make_dpo_golden.py on this CPU with torch
// 2.13, transformers 5.17 and PEFT 0.21): the committed llama golden model and adapter, two preference pairs,
// the reference the same PeftModel with its adapter disabled. For each loss setting tuna's DPO objective gives
// PEFT's per-sequence log-probabilities, the loss and every LoRA gradient.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { openWeightsFile } from "../../../src/io/safetensors/checkpoint.ts";
import { batchFromDocuments } from "../../../src/data/batch.ts";
import { asTrainingModel } from "../../../src/model/causal-lm/model.ts";
import { trainableView } from "../../../src/model/trainable.ts";
import { dpoTrainingModel, type DpoSettings } from "../../../src/train/dpo/objective.ts";
import type { DpoLossType } from "../../../src/train/dpo/loss.ts";
import { GOLDEN, elementwiseRelativeError, goldenCases, loadGoldenCase, readDump, readInts, relativeError } from "../../model/causal-lm/golden-harness.ts";

interface DpoManifest {
  beta: number;
  settings: Record<string, { loss_type: DpoLossType; label_smoothing: number; rpo_alpha: number | null }>;
}
const manifest = JSON.parse(readFileSync(join(GOLDEN, "dpo", "manifest.json"), "utf8")) as DpoManifest;

const TOL = 1e-4;

for (const [name, s] of Object.entries(manifest.settings)) {
  void test(`DPO golden ${name}: the loss and every LoRA gradient equal torch + PEFT's`, async () => {
    const { model, adapterKeys } = await loadGoldenCase((await goldenCases())["llama"]!, false);
    const dump = await openWeightsFile(join(GOLDEN, "dpo", `${name}.safetensors`));
    const ids = (await readInts(dump, "input_ids")).values;
    const labels = (await readInts(dump, "labels")).values;
    const cu = (await readInts(dump, "cu_seqlens")).values;
    const docs = cu.slice(0, -1).map((start, i) => ({ inputIds: ids.slice(start, cu[i + 1]), labels: labels.slice(start, cu[i + 1]) }));
    const settings: DpoSettings = { lossType: s.loss_type, beta: manifest.beta, labelSmoothing: s.label_smoothing, referenceFree: false, rpoAlpha: s.rpo_alpha ?? undefined };
    const dpo = dpoTrainingModel(asTrainingModel(model), settings);
    const device = dpo.upload(batchFromDocuments(docs));
    const r = await dpo.forward(device, { training: true });
    // The trainer divides by the pairs of the step (TRL's mean over pairs).
    const loss = r.lossSum / r.tokens;
    const expected = (await readDump(dump, "loss"))[0]!;
    assert.ok(Math.abs(loss - expected) <= TOL * Math.max(1, Math.abs(expected)), `${name}: loss ${loss} vs ${expected}`);
    model.backend.fill(model.params.trainable.grads, 0);
    await dpo.backward(device, 1 / r.tokens);
    for (const key of adapterKeys) {
      const grad = await model.backend.downloadF32(trainableView(model.params.trainable, key).grad);
      const want = await readDump(dump, key);
      assert.ok(relativeError(grad, want) < TOL, `${name}: gradient of ${key}: relative error ${relativeError(grad, want)}`);
      assert.ok(elementwiseRelativeError(grad, want) < 1e-3, `${name}: gradient of ${key}: elementwise relative error ${elementwiseRelativeError(grad, want)}`);
    }
    await dump.close();
  });
}
