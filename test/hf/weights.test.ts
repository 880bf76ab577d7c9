import { test } from "node:test";
import assert from "node:assert/strict";
import { parseModelConfig } from "../../src/hf/config.ts";
import { countParameters, estimateWeightMemory, expectedWeights } from "../../src/hf/weights.ts";
import { MODEL_PRESETS } from "../../src/hf/presets.ts";
import { llama2_7b, qwen2_05b } from "./fixture-configs.ts";

test("parameter totals match the published model sizes", () => {
  // Published counts: Llama-2-7B 6,738,415,616; Qwen2-0.5B 494,032,768; Meta-Llama-3-8B 8,030,261,248.
  assert.equal(countParameters(parseModelConfig(llama2_7b, "c")).total, 6_738_415_616);
  assert.equal(countParameters(parseModelConfig(qwen2_05b, "c")).total, 494_032_768);
  assert.equal(countParameters(parseModelConfig(MODEL_PRESETS["llama-3-8b"], "c")).total, 8_030_261_248);
  // Llama-2-13b-hf 13,015,864,320 and Llama-2-70b-hf 68,976,648,192 (the safetensors index's total_size / 2).
  assert.equal(countParameters(parseModelConfig(MODEL_PRESETS["llama-2-13b"], "c")).total, 13_015_864_320);
  assert.equal(countParameters(parseModelConfig(MODEL_PRESETS["llama-2-70b"], "c")).total, 68_976_648_192);
  // Llama-3.1-8B 8,030,261,248, Llama-3.2-1B 1,235,814,400 and 3B 3,212,749,824 (tied), Mistral-7B-v0.3 7,248,023,552,
  // Qwen2.5-7B 7,615,616,512 (q/k/v biases).
  assert.equal(countParameters(parseModelConfig(MODEL_PRESETS["llama-3.1-8b"], "c")).total, 8_030_261_248);
  assert.equal(countParameters(parseModelConfig(MODEL_PRESETS["llama-3.2-1b"], "c")).total, 1_235_814_400);
  assert.equal(countParameters(parseModelConfig(MODEL_PRESETS["llama-3.2-3b"], "c")).total, 3_212_749_824);
  assert.equal(countParameters(parseModelConfig(MODEL_PRESETS["mistral-7b-v0.3"], "c")).total, 7_248_023_552);
  assert.equal(countParameters(parseModelConfig(MODEL_PRESETS["qwen2.5-7b"], "c")).total, 7_615_616_512);
  // Qwen3-0.6B 596,049,920 (0.44B without the tied embedding) and Qwen3-8B 8,190,735,360: q/k norms included.
  assert.equal(countParameters(parseModelConfig(MODEL_PRESETS["qwen3-0.6b"], "c")).total, 596_049_920);
  assert.equal(countParameters(parseModelConfig(MODEL_PRESETS["qwen3-8b"], "c")).total, 8_190_735_360);
  // gemma-2-2b 2,614,341,888 (four norms a layer, tied head) and gemma-3-1b 999,885,952 (with q/k norms).
  assert.equal(countParameters(parseModelConfig(MODEL_PRESETS["gemma-2-2b"], "c")).total, 2_614_341_888);
  assert.equal(countParameters(parseModelConfig(MODEL_PRESETS["gemma-3-1b"], "c")).total, 999_885_952);
  // Phi-3-mini-4k 3,821,079,552 and Phi-4 14,659,507,200 (fused qkv_proj and gate_up_proj).
  assert.equal(countParameters(parseModelConfig(MODEL_PRESETS["phi-3-mini-4k"], "c")).total, 3_821_079_552);
  assert.equal(countParameters(parseModelConfig(MODEL_PRESETS["phi-4"], "c")).total, 14_659_507_200);
});

test("HF names and [out, in] shapes of one Qwen2 layer, with biases", () => {
  const ws = expectedWeights(parseModelConfig(qwen2_05b, "c"));
  const byName = new Map(ws.map((w) => [w.name, w.shape]));
  assert.deepEqual(byName.get("model.layers.0.self_attn.q_proj.weight"), [896, 896]);
  assert.deepEqual(byName.get("model.layers.0.self_attn.k_proj.weight"), [128, 896]);
  assert.deepEqual(byName.get("model.layers.0.self_attn.k_proj.bias"), [128]);
  assert.equal(byName.has("model.layers.0.self_attn.o_proj.bias"), false);
  assert.deepEqual(byName.get("model.layers.23.mlp.down_proj.weight"), [896, 4864]);
  assert.equal(byName.has("lm_head.weight"), false, "tied embeddings: no lm_head");
  assert.equal(ws.length, 1 + 24 * (2 + 7 + 3) + 1);
});

test("memory: NF4 about a quarter of bf16 for the linear layers of a 7B", () => {
  const cfg = parseModelConfig(llama2_7b, "c");
  const m = estimateWeightMemory(cfg);
  const { quantizable, total } = countParameters(cfg);
  assert.equal(m.bf16Bytes, total * 2);
  // 4 bits + a 4-byte absmax per 64 weights = 0.5625 bytes per linear weight; the rest in bf16.
  const expectedNf4 = (total - quantizable) * 2 + quantizable * 0.5625;
  assert.ok(Math.abs(m.nf4Bytes - expectedNf4) / expectedNf4 < 1e-4);
  // Double quant: 1 byte per 64 weights + 4 bytes per 256 blocks = ~0.5159 bytes per weight.
  const expectedDq = (total - quantizable) * 2 + quantizable * (0.5 + 1 / 64 + 4 / (64 * 256));
  assert.ok(Math.abs(m.nf4DoubleQuantBytes - expectedDq) / expectedDq < 1e-4);
  assert.ok(m.nf4DoubleQuantBytes < 3.9e9 && m.nf4DoubleQuantBytes > 3.6e9);
});
