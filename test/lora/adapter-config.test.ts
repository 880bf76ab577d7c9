import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { isTunaError } from "../../src/util/errors.ts";
import { makeLoraSettings } from "../../src/lora/settings.ts";
import { serializeAdapterConfig, settingsFromAdapterConfig } from "../../src/lora/adapter-config.ts";
import { FIXTURES, tinyLlama } from "./helpers.ts";

// peft examples/sft run_peft.sh settings: --lora_r 8 --lora_alpha 16 --lora_dropout 0.1
// --lora_target_modules all-linear (bias "none", task_type "CAUSAL_LM"), on a 2-layer Llama.
// Every LoraConfig field of PEFT 0.21.0, json.dumps(indent=2, sort_keys=True), no trailing newline;
// all-linear is written back as the full module names (PEFT >= 0.14), here in sorted order.
const SEED_EXPECTED = `{
  "alora_invocation_tokens": null,
  "alpha_pattern": {},
  "arrow_config": null,
  "auto_mapping": null,
  "base_model_name_or_path": "/tmp/base-untied",
  "bias": "none",
  "corda_config": null,
  "ensure_weight_tying": false,
  "eva_config": null,
  "exclude_modules": null,
  "fan_in_fan_out": false,
  "inference_mode": true,
  "init_lora_weights": true,
  "kasa_config": null,
  "layer_replication": null,
  "layers_pattern": null,
  "layers_to_transform": null,
  "loftq_config": {},
  "lora_alpha": 16,
  "lora_bias": false,
  "lora_dropout": 0.1,
  "lora_ga_config": null,
  "megatron_config": null,
  "megatron_core": "megatron.core",
  "modules_to_save": null,
  "monteclora_config": null,
  "peft_type": "LORA",
  "peft_version": "0.21.0",
  "qalora_group_size": 16,
  "r": 8,
  "rank_pattern": {},
  "revision": null,
  "target_modules": [
    "model.layers.0.mlp.down_proj",
    "model.layers.0.mlp.gate_proj",
    "model.layers.0.mlp.up_proj",
    "model.layers.0.self_attn.k_proj",
    "model.layers.0.self_attn.o_proj",
    "model.layers.0.self_attn.q_proj",
    "model.layers.0.self_attn.v_proj",
    "model.layers.1.mlp.down_proj",
    "model.layers.1.mlp.gate_proj",
    "model.layers.1.mlp.up_proj",
    "model.layers.1.self_attn.k_proj",
    "model.layers.1.self_attn.o_proj",
    "model.layers.1.self_attn.q_proj",
    "model.layers.1.self_attn.v_proj"
  ],
  "target_parameters": null,
  "task_type": "CAUSAL_LM",
  "trainable_token_indices": null,
  "use_bdlora": null,
  "use_dora": false,
  "use_qalora": false,
  "use_rslora": false,
  "velora_config": null
}`;

/** PEFT writes target_modules from a set, in arbitrary order: sort that one list so texts compare. */
function sortTargetList(text: string): string {
  return text.replace(/("target_modules": \[\n)([^\]]*?)(\n {2}\])/, (_m, open: string, body: string, close: string) => {
    const lines = body.split(",\n").map((l) => l.trim());
    return open + lines.sort().map((l) => `    ${l}`).join(",\n") + close;
  });
}

async function peftConfigText(name: string): Promise<string> {
  return readFile(join(FIXTURES, name, "adapter_config.json"), "utf8");
}

test("seed workflow: adapter_config.json is exactly the expected text, and what PEFT 0.21.0 wrote", async () => {
  const cfg = tinyLlama();
  const settings = makeLoraSettings({ r: 8, alpha: 16, dropout: 0.1, targetModules: "all-linear", baseModelNameOrPath: "/tmp/base-untied" }, cfg);
  const text = serializeAdapterConfig(settings);
  assert.equal(text, SEED_EXPECTED);
  assert.equal(text, sortTargetList(await peftConfigText("peft-seed")));
});

test("patterns, rsLoRA, gaussian init, token rows by module: same text as PEFT", async () => {
  const cfg = tinyLlama();
  const settings = makeLoraSettings(
    {
      r: 8,
      alpha: 16,
      targetModules: ["q_proj", "v_proj"],
      rankPattern: { v_proj: 4 },
      alphaPattern: { q_proj: 32 },
      useRslora: true,
      initLoraWeights: "gaussian",
      trainableTokenIndices: { embed_tokens: [60, 61], lm_head: [60, 61] },
      baseModelNameOrPath: "/tmp/base-untied",
    },
    cfg,
  );
  const text = serializeAdapterConfig(settings);
  assert.equal(text, sortTargetList(await peftConfigText("peft-patterns")));
  assert.ok(text.includes('"lora_dropout": 0.0,'), "dropout 0 is the float 0.0");
});

test("a regex target and a token list: same text as PEFT", async () => {
  const cfg = tinyLlama({ tie: true });
  const settings = makeLoraSettings(
    { r: 2, alpha: 4, targetModules: String.raw`.*\.layers\.1\.mlp\.(up|down)_proj`, trainableTokenIndices: [1, 5], baseModelNameOrPath: "/tmp/base-tied" },
    cfg,
  );
  assert.equal(serializeAdapterConfig(settings), await peftConfigText("peft-tied"));
});

test("reading: defaults for missing fields, unknown keys ignored, every file PEFT wrote accepted", async () => {
  const cfg = tinyLlama();
  const minimal = settingsFromAdapterConfig({ peft_type: "LORA", some_future_field: { x: 1 } }, cfg, "minimal");
  // Missing target_modules: PEFT's default for llama is q_proj, v_proj; r and lora_alpha default to 8.
  assert.deepEqual(
    minimal.targetModules.map((m) => m.linear),
    ["q_proj", "v_proj", "q_proj", "v_proj"],
  );
  assert.deepEqual([minimal.r, minimal.alpha, minimal.dropout, minimal.initLoraWeights], [8, 8, 0, true]);
  for (const name of ["peft-seed", "peft-patterns", "peft-resized"]) {
    const s = settingsFromAdapterConfig(JSON.parse(await peftConfigText(name)), tinyLlama({ vocab: 72 }), name);
    assert.equal(s.targetModules.length, name === "peft-patterns" ? 4 : 14);
    assert.equal(serializeAdapterConfig(s), sortTargetList(await peftConfigText(name)), `${name} re-serializes to the same text`);
  }
});

test("reading: malformed fields listed together; variants tuna lacks refused by name", () => {
  const cfg = tinyLlama();
  assert.throws(
    () => settingsFromAdapterConfig({ peft_type: "LORA", r: "8", lora_dropout: 2, target_modules: 5, rank_pattern: { q_proj: 0.5 } }, cfg, "bad.json"),
    (e: unknown) => {
      assert.ok(isTunaError(e) && e.code === "FILE_FORMAT", String(e));
      for (const f of ["bad.json: 4 invalid field(s)", "r must be", "lora_dropout must be", "target_modules must be", 'rank_pattern["q_proj"]']) {
        assert.ok(e.message.includes(f), `lacks "${f}": ${e.message}`);
      }
      return true;
    },
  );
  assert.throws(
    () => settingsFromAdapterConfig({ peft_type: "LORA", use_qalora: true, init_lora_weights: "pissa", modules_to_save: ["score"] }, cfg, "dora.json"),
    (e: unknown) => {
      assert.ok(isTunaError(e) && e.code === "UNSUPPORTED", String(e));
      for (const f of ["use_qalora", "pissa", '"score"']) assert.ok(e.message.includes(f), `lacks "${f}": ${e.message}`);
      return true;
    },
  );
  assert.throws(
    () => settingsFromAdapterConfig({ peft_type: "LORA", target_modules: ["c_attn"] }, cfg, "gpt2.json"),
    (e: unknown) => isTunaError(e) && e.code === "MODEL_INVALID" && e.message.includes("{c_attn} not found"),
  );
});
