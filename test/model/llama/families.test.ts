// The decoder families against a plain float64 forward written from HF's modeling code (test/model/reference-
// forward.ts): Llama and Mistral (whose path the golden dumps already check, so the reference is checked too),
// Qwen3 with its q/k norms, and sliding windows per layer; Qwen3's gradients (LoRA, and full fine-tuning of the
// q/k norm weights) against central differences.
import { test } from "node:test";
import assert from "node:assert/strict";
import { batchFromDocuments } from "../../../src/data/batch.ts";
import type { HfConfigJson } from "../../../src/hf/presets.ts";
import { parseModelConfig } from "../../../src/hf/config.ts";
import { expectedWeights } from "../../../src/hf/weights.ts";
import { forward, lastLogits, uploadBatch } from "../../../src/model/llama/model.ts";
import { referenceLogits, readWeights, type ReferenceConfig } from "../reference-forward.ts";
import { finiteDifferenceCheck } from "./gradient-check.ts";
import { TINY, tinyModel, writeTiny } from "./tiny-model.ts";

const QWEN3: HfConfigJson = { ...TINY, model_type: "qwen3", head_dim: 12, tie_word_embeddings: true };

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

void test("Qwen3's config: q/k norms, head_dim as given (else the class default 128), no q/k/v bias unless attention_bias", () => {
  const c = parseModelConfig(QWEN3, "qwen3");
  assert.equal(c.family, "qwen3");
  assert.equal(c.qkNorm, true);
  assert.equal(c.headDim, 12);
  assert.equal(c.qkvBias, false);
  assert.equal(parseModelConfig({ ...QWEN3, head_dim: undefined }, "qwen3").headDim, 128);
  const biased = parseModelConfig({ ...QWEN3, attention_bias: true }, "qwen3");
  assert.deepEqual([biased.qkvBias, biased.oBias], [true, true]);
  const names = expectedWeights(c).map((w) => w.name);
  assert.ok(names.includes("model.layers.1.self_attn.q_norm.weight") && names.includes("model.layers.0.self_attn.k_norm.weight"));
  assert.deepEqual(expectedWeights(c).find((w) => w.name.endsWith("q_norm.weight"))?.shape, [12]);
  assert.equal(parseModelConfig(TINY, "llama").qkNorm, false);
});

const CASES: [string, HfConfigJson][] = [
  ["llama (tied, GQA 4/2)", TINY],
  ["mistral, window 3 on every layer", { ...TINY, model_type: "mistral", sliding_window: 3 }],
  ["qwen3 (tied, head_dim 12 != hidden / heads)", QWEN3],
  ["qwen3 untied, MQA, attention_bias, window 4 on layer 1", { ...QWEN3, tie_word_embeddings: false, num_key_value_heads: 1, attention_bias: true, use_sliding_window: true, sliding_window: 4, max_window_layers: 1 }],
];

for (const [what, config] of CASES) {
  void test(`${what}: the model's logits equal the plain float64 forward of HF's modeling code`, async () => {
    const { dir, cfg } = await writeTiny(config, 3);
    const model = await tinyModel(dir, cfg, { mode: "full" });
    const ids = [3, 17, 40, 5, 77, 12, 9, 60, 31, 2, 88];
    await forward(model, uploadBatch(model, batchFromDocuments([{ inputIds: ids }])));
    const actual = await lastLogits(model);
    const ref: ReferenceConfig = { ...cfg, ropeTheta: cfg.ropeTheta };
    const expected = referenceLogits(ref, await readWeights(dir), ids);
    const err = relErr(actual, expected);
    assert.ok(err < 2e-6, `relative error ${err.toExponential(2)}`);
  });
}

void test("Qwen3: LoRA gradients through the q/k norms, and full fine-tuning of the norm weights, match central differences", async () => {
  const { dir, cfg } = await writeTiny({ ...QWEN3, tie_word_embeddings: false }, 4);
  await finiteDifferenceCheck(await tinyModel(dir, cfg, { mode: "lora", lora: { targetModules: ["q_proj", "k_proj", "o_proj"] } }), cfg.vocabSize, 3);
  await finiteDifferenceCheck(await tinyModel(dir, cfg, { mode: "full" }), cfg.vocabSize, 2);
});
