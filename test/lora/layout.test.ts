import { test } from "node:test";
import assert from "node:assert/strict";
import { parseModelConfig } from "../../src/hf/config.ts";
import { isTunaError } from "../../src/util/errors.ts";
import { makeLoraSettings } from "../../src/lora/settings.ts";
import { embeddingKey, formatTrainableParameters, loraKey, loraLayout, tokenRowsKey, trainableParametersLine } from "../../src/lora/layout.ts";
import { llama2_7b } from "../hf/fixture-configs.ts";
import { tinyLlama } from "./helpers.ts";

const llama7b = parseModelConfig(llama2_7b, "llama-2-7b");

test("Llama-2-7B r=8: the trainable-parameter lines PEFT prints", () => {
  // The well-known q_proj,v_proj line (also what PEFT 0.21.0 printed for this config on a meta-device model).
  const qv = makeLoraSettings({ r: 8, alpha: 16, targetModules: ["q_proj", "v_proj"] }, llama7b);
  assert.equal(trainableParametersLine(qv, llama7b), "trainable params: 4,194,304 || all params: 6,742,609,920 || trainable%: 0.0622");

  // all-linear by hand: r * (in + out) per module, 32 layers, C = 4096, F = 11008.
  const perLayer = 4 * (4096 + 4096) + 2 * (4096 + 11008) + (11008 + 4096);
  assert.equal(perLayer, 78_080);
  assert.equal(8 * perLayer * 32, 19_988_480);
  const all = makeLoraSettings({ r: 8, alpha: 16, dropout: 0.1, targetModules: "all-linear" }, llama7b);
  assert.equal(loraLayout(all, llama7b).trainableParams, 19_988_480);
  // 6,738,415,616 base parameters + 19,988,480; PEFT 0.21.0 printed exactly this line.
  assert.equal(trainableParametersLine(all, llama7b), "trainable params: 19,988,480 || all params: 6,758,404,096 || trainable%: 0.2958");
});

test("tiny models: the lines PEFT 0.21.0 printed for the fixture adapters", () => {
  // test/lora/fixtures/make_peft_fixtures.py, cases "patterns", "resized" and "tied".
  const untied = tinyLlama();
  const patterns = makeLoraSettings(
    {
      r: 8,
      alpha: 16,
      targetModules: ["q_proj", "v_proj"],
      rankPattern: { v_proj: 4 },
      alphaPattern: { q_proj: 32 },
      useRslora: true,
      initLoraWeights: "gaussian",
      trainableTokenIndices: { embed_tokens: [60, 61], lm_head: [60, 61] },
    },
    untied,
  );
  assert.equal(trainableParametersLine(patterns, untied), "trainable params: 768 || all params: 8,272 || trainable%: 9.2843");
  const resizedCfg = tinyLlama({ vocab: 72 });
  const resized = makeLoraSettings({ r: 4, alpha: 8, targetModules: "all-linear" }, resizedCfg);
  assert.equal(trainableParametersLine(resized, resizedCfg), "trainable params: 2,240 || all params: 10,000 || trainable%: 22.4000");
  const tiedCfg = tinyLlama({ tie: true });
  const tied = makeLoraSettings({ r: 2, alpha: 4, targetModules: String.raw`.*\.layers\.1\.mlp\.(up|down)_proj`, trainableTokenIndices: [1, 5] }, tiedCfg);
  // The tied lm_head shares the embed_tokens rows: counted once.
  assert.equal(trainableParametersLine(tied, tiedCfg), "trainable params: 256 || all params: 6,736 || trainable%: 3.8005");
  assert.equal(formatTrainableParameters(1, 3), "trainable params: 1 || all params: 3 || trainable%: 33.3333");
});

test("layout: shapes [R, in] / [out, R], rank and alpha patterns, contiguous offsets", () => {
  const cfg = tinyLlama();
  const s = makeLoraSettings(
    {
      r: 8,
      alpha: 16,
      targetModules: ["q_proj", "v_proj", "down_proj"],
      rankPattern: { v_proj: 4 },
      alphaPattern: { q_proj: 32 },
      useRslora: true,
      trainableTokenIndices: [62, 63],
    },
    cfg,
  );
  const layout = loraLayout(s, cfg);
  const q = layout.modules[0];
  const v = layout.modules[1];
  const down = layout.modules[2];
  assert.ok(q !== undefined && v !== undefined && down !== undefined);
  assert.deepEqual([q.name, q.aShape, q.bShape, q.scaling], ["model.layers.0.self_attn.q_proj", [8, 16], [16, 8], 32 / Math.sqrt(8)]);
  // k/v: out = KV * D = 2 * 4 = 8.
  assert.deepEqual([v.r, v.aShape, v.bShape, v.scaling], [4, [4, 16], [8, 4], 16 / 2]);
  assert.deepEqual([down.aShape, down.bShape], [[8, 40], [16, 8]]);
  let offset = 0;
  for (const m of layout.modules) {
    assert.equal(m.aOffset, offset);
    assert.equal(m.bOffset, offset + m.aShape[0] * m.aShape[1]);
    offset = m.bOffset + m.bShape[0] * m.bShape[1];
  }
  assert.deepEqual(layout.tokens, [{ module: "embed_tokens", indices: [62, 63], shape: [2, 16], offset }]);
  assert.equal(layout.trainableParams, offset + 32);
  assert.equal(makeLoraSettings({ r: 8, alpha: 16, targetModules: ["q_proj"] }, cfg).targetModules.length, 2);
});

test("saved key names carry no adapter name", () => {
  assert.equal(loraKey("model.layers.3.self_attn.q_proj", "A"), "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight");
  assert.equal(loraKey("model.layers.3.mlp.down_proj", "B"), "base_model.model.model.layers.3.mlp.down_proj.lora_B.weight");
  assert.equal(tokenRowsKey("embed_tokens"), "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta");
  assert.equal(tokenRowsKey("lm_head"), "base_model.model.lm_head.token_adapter.trainable_tokens_delta");
  assert.equal(embeddingKey("lm_head"), "base_model.model.lm_head.weight");
});

test("settings problems are reported together", () => {
  const cfg = tinyLlama({ tie: true });
  assert.throws(
    () =>
      makeLoraSettings(
        { r: 0, alpha: -1, dropout: 1, targetModules: "all-linear", rankPattern: { "(": 2 }, trainableTokenIndices: { lm_head: [1], embed_tokens: [64, 3, 3] } },
        cfg,
      ),
    (e: unknown) => {
      assert.ok(isTunaError(e) && e.code === "CONFIG_INVALID");
      for (const f of ["r must be", "lora_alpha must be", "lora_dropout must be", "not a valid regular expression", "lm_head is tied", "not a token id in [0, 64)", "token 3 twice"]) {
        assert.ok(e.message.includes(f), `lacks "${f}": ${e.message}`);
      }
      return true;
    },
  );
});
