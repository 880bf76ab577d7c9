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
import { forward, lastLogits, uploadBatch } from "../../../src/model/causal-lm/model.ts";
import { referenceLogits, readWeights, type ReferenceConfig } from "../reference-forward.ts";
import { finiteDifferenceCheck } from "./gradient-check.ts";
import { makeLoraSettings } from "../../../src/lora/settings.ts";
import { loraLayout } from "../../../src/lora/layout.ts";
import { TINY, tinyModel, writeTiny } from "./tiny-model.ts";

const QWEN3: HfConfigJson = { ...TINY, model_type: "qwen3", head_dim: 12, tie_word_embeddings: true };
// Gemma 2 with every feature biting at this size: small soft-caps, a window shorter than the documents, a
// query_pre_attn_scalar that is not head_dim.
const GEMMA2: HfConfigJson = {
  ...TINY,
  model_type: "gemma2",
  head_dim: 8,
  query_pre_attn_scalar: 6,
  sliding_window: 3,
  attn_logit_softcapping: 2,
  final_logit_softcapping: 3,
  hidden_activation: "gelu_pytorch_tanh",
  rms_norm_eps: 1e-6,
};
// Gemma 3 text: q/k norms, layer 0 sliding (window 3, local RoPE base 100) and layer 1 global (base 1e6).
const GEMMA3: HfConfigJson = {
  ...TINY,
  model_type: "gemma3_text",
  head_dim: 8,
  query_pre_attn_scalar: 8,
  sliding_window: 3,
  sliding_window_pattern: 2,
  rope_theta: 1000000,
  rope_local_base_freq: 100,
  rms_norm_eps: 1e-6,
};

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
  ["gemma2 (sandwich norms, 1 + w, GeGLU, soft-capped scores and logits, alternating window)", GEMMA2],
  ["gemma3 text (q/k norms, sliding layer with its own RoPE base, global layer)", GEMMA3],
  ["phi3 (fused qkv_proj and gate_up_proj, window 4)", { ...TINY, model_type: "phi3", tie_word_embeddings: false, sliding_window: 4 }],
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

void test("Gemma's configs: layer windows as transformers sets them, the attention scale, soft-caps, GeGLU, tied head", () => {
  const g2 = parseModelConfig({ ...GEMMA2, num_hidden_layers: 4 }, "gemma2");
  assert.deepEqual(g2.layerWindows, [3, null, 3, null]);
  assert.equal(g2.attentionScale, 6 ** -0.5);
  assert.deepEqual([g2.attnSoftcap, g2.finalSoftcap, g2.hiddenAct, g2.normPlusOne, g2.embedScale, g2.sandwichNorms, g2.tieWordEmbeddings], [2, 3, "gelu_tanh", true, true, true, true]);
  assert.equal(g2.localRopeTheta, null);
  const g3 = parseModelConfig({ ...GEMMA3, num_hidden_layers: 12, sliding_window_pattern: undefined }, "gemma3");
  assert.deepEqual(g3.layerWindows, [3, 3, 3, 3, 3, null, 3, 3, 3, 3, 3, null], "every sixth layer is global by default");
  assert.deepEqual([g3.qkNorm, g3.localRopeTheta, g3.attnSoftcap, g3.finalSoftcap], [true, 100, null, null]);
  // transformers 5 writes one rope_parameters set per layer type.
  const nested = parseModelConfig(
    { ...GEMMA3, rope_theta: undefined, rope_local_base_freq: undefined, rope_parameters: { full_attention: { rope_type: "linear", factor: 8, rope_theta: 1000000 }, sliding_attention: { rope_type: "default", rope_theta: 10000 } } },
    "gemma3",
  );
  assert.deepEqual([nested.ropeTheta, nested.ropeScaling, nested.localRopeTheta], [1000000, { type: "linear", factor: 8 }, 10000]);
  const names = expectedWeights(g2).map((w) => w.name);
  for (const n of ["post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"]) assert.ok(names.includes(`model.layers.1.${n}.weight`), n);
  assert.ok(!names.includes("lm_head.weight"));
  assert.throws(() => parseModelConfig({ ...GEMMA2, hidden_activation: "gelu" }, "gemma2"), /hidden_act "gelu" is not supported/);
  assert.throws(() => parseModelConfig({ ...GEMMA2, model_type: "gemma3" }, "gemma3"), /model_type "gemma3" is not supported/);
});

void test("Gemma 2 and 3: LoRA and full fine-tuning gradients (norms trained as w, computed as 1 + w) match central differences", async () => {
  for (const config of [GEMMA2, GEMMA3]) {
    const { dir, cfg } = await writeTiny(config, 6);
    await finiteDifferenceCheck(await tinyModel(dir, cfg, { mode: "lora", lora: { targetModules: ["q_proj", "o_proj", "gate_proj", "down_proj"] } }), cfg.vocabSize, 3);
    await finiteDifferenceCheck(await tinyModel(dir, cfg, { mode: "full" }), cfg.vocabSize, 2);
  }
});

const PHI3: HfConfigJson = { ...TINY, model_type: "phi3", tie_word_embeddings: false };

void test("Phi-3: fused qkv_proj and gate_up_proj are the checkpoint's and PEFT's modules; all-linear targets them", () => {
  const c = parseModelConfig(PHI3, "phi3");
  const weights = new Map(expectedWeights(c).map((w) => [w.name, w.shape]));
  assert.deepEqual(weights.get("model.layers.0.self_attn.qkv_proj.weight"), [(4 + 2 * 2) * 8, 32]);
  assert.deepEqual(weights.get("model.layers.1.mlp.gate_up_proj.weight"), [2 * 48, 32]);
  assert.equal(weights.has("model.layers.0.self_attn.q_proj.weight"), false);
  const lora = makeLoraSettings({ r: 2, alpha: 4, targetModules: "all-linear" }, c);
  assert.deepEqual(lora.targetModules.filter((m) => m.layer === 0).map((m) => m.linear), ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]);
  const layout = loraLayout(lora, c);
  const qkv = layout.modules.find((m) => m.name === "model.layers.0.self_attn.qkv_proj")!;
  assert.deepEqual([qkv.aShape, qkv.bShape], [[2, 32], [64, 2]]);
  assert.throws(() => makeLoraSettings({ r: 2, alpha: 4, targetModules: ["q_proj"] }, c), /qkv_proj, o_proj, gate_up_proj, down_proj/);
});

void test("Phi-3: LoRA on the fused modules (one dropout mask for q, k, v), DoRA, and full fine-tuning match central differences", async () => {
  const { dir, cfg } = await writeTiny(PHI3, 7);
  await finiteDifferenceCheck(await tinyModel(dir, cfg, { mode: "lora", lora: { dropout: 0.3 } }), cfg.vocabSize, 3, 5);
  await finiteDifferenceCheck(await tinyModel(dir, cfg, { mode: "lora", lora: { useDora: true, targetModules: ["qkv_proj", "gate_up_proj"] } }), cfg.vocabSize, 3);
  await finiteDifferenceCheck(await tinyModel(dir, cfg, { mode: "full" }), cfg.vocabSize, 2);
});

void test("architectures still unsupported are refused saying what is missing and listing what is supported", () => {
  for (const [type, missing] of [
    ["qwen3_moe", "mixture-of-experts"],
    ["gemma3", "its text model (model_type gemma3_text"],
    ["llama4", "chunked attention"],
    ["some_new_model", ""],
  ] as const) {
    assert.throws(() => parseModelConfig({ ...TINY, model_type: type }, "config.json"), (e: unknown) => {
      const message = (e as Error).message;
      assert.ok(message.includes(`model_type "${type}" is not supported`) && message.includes(missing), message);
      assert.ok(message.includes("supported: llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3"), message);
      return true;
    });
  }
  // Features a supported family may carry that tuna lacks: refused by name, never loaded partially.
  assert.throws(() => parseModelConfig({ ...TINY, model_type: "phi3", partial_rotary_factor: 0.75 }, "config.json"), /partial_rotary_factor 0.75 is not supported/);
  assert.throws(() => parseModelConfig({ ...TINY, model_type: "phi3", rope_scaling: { type: "longrope", short_factor: [1], long_factor: [1] } }, "config.json"), /rope_scaling type "longrope" is not supported/);
});

void test("every supported family registers a block implementation: Gemma's sandwich block, the pre-norm block for the others", async () => {
  const { MODEL_FAMILIES } = await import("../../../src/hf/families.ts");
  const { FAMILY_BLOCKS, preNormBlock, sandwichBlock } = await import("../../../src/model/causal-lm/blocks.ts");
  for (const [type, spec] of Object.entries(MODEL_FAMILIES)) {
    if (spec === undefined) continue;
    const block = FAMILY_BLOCKS[spec.family];
    assert.equal(block, spec.gemma !== null ? sandwichBlock : preNormBlock, type);
  }
});
