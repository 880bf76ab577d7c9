import { test } from "node:test";
import assert from "node:assert/strict";
import { parseModelConfig } from "../../src/hf/config.ts";
import { TunaError } from "../../src/util/errors.ts";
import { llama2_7b, llama31_8b, mistral_7b_v01, qwen2_05b } from "./fixture-configs.ts";


test("Llama-2-7B: MHA, head_dim derived, no bias, untied", () => {
  const c = parseModelConfig(llama2_7b, "config.json");
  assert.equal(c.family, "llama");
  assert.equal(c.headDim, 128);
  assert.equal(c.numKvHeads, 32);
  assert.equal(c.ropeTheta, 10000); // absent in the file: LlamaConfig's default
  assert.deepEqual(c.ropeScaling, { type: "default" });
  assert.equal(c.qkvBias, false);
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(c.slidingWindow, null);
  assert.deepEqual(c.eosTokenIds, [2]);
});

test("Llama-3.1-8B: GQA, llama3 rope scaling, eos list", () => {
  const c = parseModelConfig(llama31_8b, "config.json");
  assert.equal(c.numKvHeads, 8);
  assert.equal(c.ropeTheta, 500000);
  assert.deepEqual(c.ropeScaling, { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
  assert.deepEqual(c.eosTokenIds, [128001, 128008, 128009]);
});

test("Mistral applies its sliding window; Qwen2 only with use_sliding_window", () => {
  assert.equal(parseModelConfig(mistral_7b_v01, "c").slidingWindow, 4096);
  assert.equal(parseModelConfig({ ...mistral_7b_v01, sliding_window: null }, "c").slidingWindow, null);
  const noKey: Record<string, unknown> = { ...mistral_7b_v01 };
  delete noKey["sliding_window"];
  assert.equal(parseModelConfig(noKey, "c").slidingWindow, 4096, "MistralConfig's class default applies when the key is absent");
  assert.equal(parseModelConfig(qwen2_05b, "c").slidingWindow, null);
  // Qwen2 windows only the layers from max_window_layers on: 24 of 24 layers means none.
  assert.equal(parseModelConfig({ ...qwen2_05b, use_sliding_window: true }, "c").slidingWindow, null);
  const qwen = parseModelConfig({ ...qwen2_05b, use_sliding_window: true, sliding_window: 4096, max_window_layers: 21 }, "c");
  assert.equal(qwen.slidingWindow, 4096);
  assert.deepEqual(qwen.layerWindows, [...Array<null>(21).fill(null), 4096, 4096, 4096]);
  assert.deepEqual(parseModelConfig(mistral_7b_v01, "c").layerWindows, Array<number>(32).fill(4096));
});

test("layer_types (transformers 5, Gemma-style alternation) decides each layer's window; other layer kinds are refused", () => {
  const types = Array.from({ length: 24 }, (_, l) => (l % 4 === 3 ? "full_attention" : "sliding_attention"));
  const c = parseModelConfig({ ...qwen2_05b, use_sliding_window: true, sliding_window: 512, layer_types: types }, "c");
  assert.deepEqual(c.layerWindows, types.map((t) => (t === "sliding_attention" ? 512 : null)));
  // Without use_sliding_window Qwen2 has no window to apply, whatever layer_types says.
  assert.deepEqual(parseModelConfig({ ...qwen2_05b, layer_types: types }, "c").layerWindows, Array<null>(24).fill(null));
  assert.throws(() => parseModelConfig({ ...mistral_7b_v01, layer_types: ["chunked_attention", ...Array<string>(31).fill("full_attention")] }, "config.json"), /layer_types "chunked_attention" not supported/);
  assert.throws(() => parseModelConfig({ ...mistral_7b_v01, layer_types: ["full_attention"] }, "config.json"), /layer_types has 1 entries for 32 layers/);
});

test("Qwen2: q/k/v bias always, o_proj none, tied embeddings", () => {
  const c = parseModelConfig(qwen2_05b, "config.json");
  assert.equal(c.qkvBias, true);
  assert.equal(c.oBias, false);
  assert.equal(c.tieWordEmbeddings, true);
  assert.equal(c.headDim, 64);
});

test("Llama attention_bias puts a bias on all four projections", () => {
  const c = parseModelConfig({ ...llama2_7b, attention_bias: true }, "c");
  assert.equal(c.qkvBias, true);
  assert.equal(c.oBias, true);
});

test("explicit head_dim wins over hidden/heads; transformers v5 rope_parameters accepted", () => {
  const c = parseModelConfig({ ...llama2_7b, head_dim: 64, rope_parameters: { rope_type: "default", rope_theta: 123 } }, "c");
  assert.equal(c.headDim, 64);
  assert.equal(c.ropeTheta, 123);
});

test("bitsandbytes quantization_config with the underscored flags", () => {
  const c = parseModelConfig(
    {
      ...llama2_7b,
      quantization_config: {
        _load_in_4bit: true, _load_in_8bit: false, bnb_4bit_compute_dtype: "bfloat16", bnb_4bit_quant_storage: "uint8",
        bnb_4bit_quant_type: "nf4", bnb_4bit_use_double_quant: true, llm_int8_skip_modules: null, quant_method: "bitsandbytes",
      },
    },
    "c",
  );
  assert.deepEqual(c.quantization, {
    quantMethod: "bitsandbytes", loadIn4bit: true, loadIn8bit: false, quantType: "nf4", useDoubleQuant: true,
    computeDtype: "bfloat16", quantStorage: "uint8", skipModules: [],
  });
});

function rejects(json: unknown, code: string, ...fragments: string[]): void {
  assert.throws(
    () => parseModelConfig(json, "dir/config.json"),
    (e: unknown) => {
      assert.ok(e instanceof TunaError);
      assert.equal(e.code, code);
      assert.match(e.message, /dir\/config\.json/);
      for (const f of fragments) assert.ok(e.message.includes(f), `message lacks "${f}": ${e.message}`);
      return true;
    },
  );
}

test("unsupported model_type names the supported ones", () => {
  rejects({ ...llama2_7b, model_type: "gpt2" }, "MODEL_UNSUPPORTED", '"gpt2"', "llama", "mistral", "qwen2");
});

test("not a config: no model_type, or not an object", () => {
  rejects({ hidden_size: 3 }, "MODEL_INVALID", "model_type");
  rejects([1, 2], "MODEL_INVALID", "array");
});

test("wrong types are all reported together, by field", () => {
  rejects({ ...llama2_7b, hidden_size: "4096", num_hidden_layers: -1 }, "MODEL_INVALID", "hidden_size", "num_hidden_layers");
});

test("inconsistent dimensions are reported together", () => {
  rejects({ ...llama2_7b, num_key_value_heads: 5, hidden_act: "gelu" }, "MODEL_INVALID", "num_key_value_heads 5", "gelu", "2 problem(s)");
});

test("rope scaling: llama3 without its keys, unknown type", () => {
  rejects({ ...llama2_7b, rope_scaling: { rope_type: "llama3", factor: 8 } }, "MODEL_INVALID", "low_freq_factor");
  rejects({ ...llama2_7b, rope_scaling: { type: "longrope", factor: 2 } }, "MODEL_INVALID", "longrope");
  assert.deepEqual(parseModelConfig({ ...llama2_7b, rope_scaling: { type: "linear", factor: 4 } }, "c").ropeScaling, { type: "linear", factor: 4 });
});

test("non-bitsandbytes quantization is refused", () => {
  rejects({ ...llama2_7b, quantization_config: { quant_method: "gptq", bits: 4 } }, "MODEL_INVALID", "gptq");
});
