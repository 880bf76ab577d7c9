import { test } from "node:test";
import assert from "node:assert/strict";
import { parseModelConfig } from "../../src/hf/config.ts";
import { createRng } from "../../src/util/random.ts";
import { makeLoraSettings } from "../../src/lora/settings.ts";
import { copyTokenRows, initLoraWeights, kaimingUniformBound } from "../../src/lora/init.ts";
import { tinyLlama } from "./helpers.ts";

// C = 1024 so that one lora_A (8 x 1024) holds 8192 draws.
const cfg = parseModelConfig(
  { model_type: "llama", vocab_size: 128, hidden_size: 1024, intermediate_size: 2048, num_hidden_layers: 1, num_attention_heads: 8 },
  "stats model",
);

function stats(values: Float32Array): { mean: number; variance: number; maxAbs: number } {
  let sum = 0;
  let maxAbs = 0;
  for (const v of values) {
    sum += v;
    maxAbs = Math.max(maxAbs, Math.abs(v));
  }
  const mean = sum / values.length;
  let sq = 0;
  for (const v of values) sq += (v - mean) ** 2;
  return { mean, variance: sq / values.length, maxAbs };
}

test("default init: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming-uniform, a=sqrt(5)), B = 0", () => {
  // torch: gain = sqrt(2 / (1 + a^2)) = sqrt(1/3); bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
  assert.ok(Math.abs(kaimingUniformBound(1024) - Math.sqrt(1 / 3) * Math.sqrt(3 / 1024)) < 1e-15);
  const s = makeLoraSettings({ r: 8, alpha: 16, targetModules: ["q_proj", "down_proj"] }, cfg);
  const params = initLoraWeights(s, cfg, createRng(1234));
  for (const m of params.layout.modules) {
    const t = params.byModule.get(m.name);
    assert.ok(t !== undefined);
    const bound = 1 / Math.sqrt(m.inFeatures);
    const { mean, variance, maxAbs } = stats(t.a);
    assert.ok(maxAbs <= Math.fround(bound), `${m.name}: |A| max ${maxAbs} > bound ${bound}`);
    assert.ok(maxAbs > 0.99 * bound, `${m.name}: draws do not reach the bound`);
    // Uniform(-b, b): variance b^2/3; the mean of n draws has standard deviation b / sqrt(3n).
    const meanSd = bound / Math.sqrt(3 * t.a.length);
    assert.ok(Math.abs(mean) < 5 * meanSd, `${m.name}: mean ${mean}`);
    assert.ok(Math.abs(variance / (bound ** 2 / 3) - 1) < 0.05, `${m.name}: variance ${variance} vs ${bound ** 2 / 3}`);
    assert.ok(t.b.every((x) => x === 0), `${m.name}: B must start at zero`);
  }
  // Reproducible from the seed.
  assert.deepEqual(initLoraWeights(s, cfg, createRng(1234)).flat, params.flat);
});

test('"gaussian" init: A ~ N(0, (1/r)^2), B = 0', () => {
  const s = makeLoraSettings({ r: 4, alpha: 8, targetModules: ["q_proj", "o_proj"], initLoraWeights: "gaussian" }, cfg);
  const params = initLoraWeights(s, cfg, createRng(7));
  let n = 0;
  for (const m of params.layout.modules) {
    const t = params.byModule.get(m.name);
    assert.ok(t !== undefined);
    const { mean, variance } = stats(t.a);
    assert.ok(Math.abs(mean) < (5 * 0.25) / Math.sqrt(t.a.length));
    assert.ok(Math.abs(Math.sqrt(variance) / 0.25 - 1) < 0.05, `std ${Math.sqrt(variance)}`);
    assert.ok(t.b.every((x) => x === 0));
    n += t.a.length + t.b.length;
  }
  assert.equal(n, params.flat.length);
});

test("trainable token rows start as copies of the base rows", () => {
  const tiny = tinyLlama();
  const s = makeLoraSettings({ r: 2, alpha: 2, targetModules: ["q_proj"], trainableTokenIndices: { embed_tokens: [3, 60], lm_head: [61] } }, tiny);
  const params = initLoraWeights(s, tiny, createRng(0));
  const embed = Float32Array.from({ length: 64 * 16 }, (_, i) => i);
  const head = Float32Array.from({ length: 64 * 16 }, (_, i) => -i);
  copyTokenRows(params, { embed_tokens: embed, lm_head: head });
  assert.deepEqual(Array.from(params.tokenRows.get("embed_tokens") ?? []), [...embed.subarray(48, 64), ...embed.subarray(960, 976)]);
  assert.deepEqual(Array.from(params.tokenRows.get("lm_head") ?? []), Array.from(head.subarray(976, 992)));
});
