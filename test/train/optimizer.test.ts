import { test } from "node:test";
import assert from "node:assert/strict";
import { createCpuBackend } from "../../src/backend/cpu/index.ts";
import { createTrainableBuffers } from "../../src/model/trainable.ts";
import { clipGradients, createOptimizerState, decays, optimizerStep } from "../../src/train/optimizer.ts";

test("HF's no-decay names: biases and every norm weight; LoRA, projections and embeddings decay", () => {
  assert.equal(decays("model.layers.0.input_layernorm.weight"), false);
  assert.equal(decays("model.layers.0.post_attention_layernorm.weight"), false);
  assert.equal(decays("model.norm.weight"), false);
  assert.equal(decays("model.layers.0.self_attn.q_proj.bias"), false);
  assert.equal(decays("model.layers.0.self_attn.q_norm.weight"), false);
  assert.equal(decays("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"), true);
  assert.equal(decays("model.layers.0.mlp.down_proj.weight"), true);
  assert.equal(decays("model.embed_tokens.weight"), true);
});

test("AdamW step: decayed and non-decayed groups against a hand computation", async () => {
  const be = createCpuBackend({ threads: 1 });
  const t = createTrainableBuffers(be, [
    { name: "a.weight", shape: [2] },
    { name: "a.bias", shape: [1] },
  ]);
  be.upload(t.params, Float32Array.from([1, -2, 3]));
  be.upload(t.grads, Float32Array.from([0.5, 0.5, -1]));
  const state = createOptimizerState(be, t);
  assert.deepEqual(state.groups, [
    { offset: 0, size: 2, decay: true },
    { offset: 2, size: 1, decay: false },
  ]);
  const lr = 0.1;
  optimizerStep(be, t, state, lr, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });
  const p = await be.downloadF32(t.params);
  // Step 1: mhat = g, vhat = g^2, update = lr * g / (|g| + eps) = lr * sign(g); decay p *= (1 - lr*wd) first.
  const expected = [1 * (1 - 0.001) - 0.1, -2 * (1 - 0.001) - 0.1, 3 + 0.1];
  p.forEach((v, i) => { assert.ok(Math.abs(v - expected[i]!) < 1e-6, `${i}: ${v} vs ${expected[i]!}`); });
});

test("clipping: returns the pre-clip norm and scales only when above max", async () => {
  const be = createCpuBackend({ threads: 1 });
  const g = be.alloc("f32", [2]);
  be.upload(g, Float32Array.from([3, 4]));
  assert.ok(Math.abs((await clipGradients(be, g, 1)) - 5) < 1e-6);
  const clipped = await be.downloadF32(g);
  assert.ok(Math.abs(clipped[0]! - (3 * 1) / (5 + 1e-6)) < 1e-6);
  be.upload(g, Float32Array.from([0.3, 0.4]));
  await clipGradients(be, g, 1);
  assert.deepEqual(Array.from(await be.downloadF32(g)), [Math.fround(0.3), Math.fround(0.4)]);
});
