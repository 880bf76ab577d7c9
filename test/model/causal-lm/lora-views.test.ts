// withAdapter: a second adapter over base weights already loaded computes what a load of base + adapter computes,
// with the frozen tensors shared (not copied); plain LoRA, DoRA and Phi-3's fused modules alike.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createCpuBackend } from "../../../src/backend/cpu/index.ts";
import { batchFromDocuments } from "../../../src/data/batch.ts";
import type { HfConfigJson } from "../../../src/hf/presets.ts";
import { openWeights } from "../../../src/io/safetensors/checkpoint.ts";
import { makeLoraSettings } from "../../../src/lora/settings.ts";
import { loadCausalLmParams } from "../../../src/model/causal-lm/load.ts";
import { withAdapter } from "../../../src/model/causal-lm/lora-views.ts";
import { createCausalLm, forward, lastLogits, uploadBatch } from "../../../src/model/causal-lm/model.ts";
import type { CausalLmParams } from "../../../src/model/causal-lm/params.ts";
import { createRng } from "../../../src/util/random.ts";
import { TINY, sampleDocs, writeTiny } from "./tiny-model.ts";

async function logits(params: CausalLmParams): Promise<Float32Array> {
  const model = createCausalLm(sharedBackend, params, { checkpointing: false, seed: 0 });
  await forward(model, uploadBatch(model, batchFromDocuments(sampleDocs(params.cfg.vocabSize).slice(0, 2))));
  return lastLogits(model);
}

const sharedBackend = createCpuBackend();

for (const [what, config, lora] of [
  ["llama, LoRA on a few modules", TINY, { targetModules: ["q_proj", "v_proj", "down_proj"] }],
  ["qwen2 biases, DoRA all-linear", { ...TINY, model_type: "qwen2", tie_word_embeddings: false }, { targetModules: "all-linear", useDora: true }],
  ["phi3 fused modules", { ...TINY, model_type: "phi3", tie_word_embeddings: false }, { targetModules: "all-linear" }],
] as [string, HfConfigJson, Record<string, unknown>][]) {
  void test(`withAdapter over a loaded base equals loading base + adapter: ${what}`, async () => {
    const { dir, cfg } = await writeTiny(config, 9);
    const settings = makeLoraSettings({ r: 3, alpha: 6, targetModules: "all-linear", ...lora }, cfg);
    const weights = await openWeights(dir);
    const base = await loadCausalLmParams(sharedBackend, cfg, weights, { mode: "lora", baseDtype: "f32" });
    const whole = await loadCausalLmParams(sharedBackend, cfg, weights, { mode: "lora", baseDtype: "f32", lora: settings });
    await weights.close();
    const values = new Float32Array(whole.trainable.total);
    const rng = createRng(3);
    for (let i = 0; i < values.length; i++) values[i] = 0.3 * rng.normal() + (whole.trainable.entries.find((e) => i >= e.offset && i < e.offset + e.size)?.name.endsWith("magnitude_vector") === true ? 1 : 0);
    sharedBackend.upload(whole.trainable.params, values);
    const attached = withAdapter(sharedBackend, base, settings, "f32");
    assert.equal(attached.trainable.total, whole.trainable.total);
    sharedBackend.upload(attached.trainable.params, values);
    assert.deepEqual(await logits(attached), await logits(whole));
    assert.notDeepEqual(await logits(attached), await logits(base));
    // The frozen weights are the base's own tensors.
    assert.equal(attached.layers[1]!.proj.up_proj.weight, base.layers[1]!.proj.up_proj.weight);
    assert.equal(attached.embed, base.embed);
  });
}
