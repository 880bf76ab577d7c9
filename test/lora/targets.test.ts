import { test } from "node:test";
import assert from "node:assert/strict";
import { parseModelConfig } from "../../src/hf/config.ts";
import { isTunaError } from "../../src/util/errors.ts";
import { patternValue, resolveTargetModules } from "../../src/lora/targets.ts";
import { llama2_7b } from "../hf/fixture-configs.ts";
import { tinyLlama } from "./helpers.ts";

const llama7b = parseModelConfig(llama2_7b, "llama-2-7b");
const ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

function throwsCode(fn: () => unknown, code: string, ...fragments: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isTunaError(e), `expected a TunaError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const f of fragments) assert.ok(e.message.includes(f), `message lacks "${f}": ${e.message}`);
    return true;
  });
}

test("all-linear: the seven projections of every layer, never lm_head", () => {
  for (const spec of ["all-linear", "ALL-LINEAR"]) {
    const r = resolveTargetModules(spec, llama7b);
    assert.equal(r.modules.length, 32 * 7);
    assert.deepEqual(r.byLayer[31], ALL);
    assert.ok(!r.modules.some((m) => m.name === "lm_head"));
  }
  const first = resolveTargetModules("all-linear", tinyLlama()).modules.slice(0, 7).map((m) => m.name);
  assert.deepEqual(first, [
    "model.layers.0.self_attn.q_proj",
    "model.layers.0.self_attn.k_proj",
    "model.layers.0.self_attn.v_proj",
    "model.layers.0.self_attn.o_proj",
    "model.layers.0.mlp.gate_proj",
    "model.layers.0.mlp.up_proj",
    "model.layers.0.mlp.down_proj",
  ]);
});

test("a list matches short names, dotted suffixes and full module names", () => {
  const short = resolveTargetModules(["q_proj", "v_proj"], llama7b);
  assert.equal(short.modules.length, 64);
  assert.deepEqual(short.byLayer[7], ["q_proj", "v_proj"]);
  const full = resolveTargetModules(["model.layers.0.self_attn.q_proj", "layers.3.mlp.down_proj"], llama7b);
  assert.deepEqual(
    full.modules.map((m) => [m.name, m.layer, m.linear]),
    [
      ["model.layers.0.self_attn.q_proj", 0, "q_proj"],
      ["model.layers.3.mlp.down_proj", 3, "down_proj"],
    ],
  );
  // "proj" is not a whole name component, so it matches nothing ("q_proj" does not end with ".proj").
  throwsCode(() => resolveTargetModules(["proj"], llama7b), "CONFIG_INVALID", "{proj}");
});

test("a single string is a regex fully matched against full names, as in PEFT", () => {
  const r = resolveTargetModules(String.raw`.*\.layers\.1\.mlp\.(up|down)_proj`, tinyLlama());
  assert.deepEqual(
    r.modules.map((m) => m.name),
    ["model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj"],
  );
  const named = resolveTargetModules(String.raw`model\.layers\.(?P<l>0)\.self_attn\.[qv]_proj`, tinyLlama());
  assert.equal(named.modules.length, 2);
  // re.fullmatch("q_proj", "model.layers.0.self_attn.q_proj") is None: nothing matches.
  throwsCode(() => resolveTargetModules("q_proj", tinyLlama()), "CONFIG_INVALID", "not found in the base model");
  throwsCode(() => resolveTargetModules("q_proj,v_proj", tinyLlama()), "CONFIG_INVALID", "give a list of names");
  throwsCode(() => resolveTargetModules("(q_proj", tinyLlama()), "CONFIG_INVALID", "not a valid regular expression");
});

test("unknown names: CONFIG_INVALID listing the model's linear modules", () => {
  throwsCode(
    () => resolveTargetModules(["q_prj"], llama7b),
    "CONFIG_INVALID",
    "Target modules {q_prj} not found in the base model",
    "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj",
    "model.layers.31.mlp.down_proj",
  );
  // One unknown entry among known ones: PEFT ignores it; tuna's strict mode (user input) does not.
  assert.equal(resolveTargetModules(["q_proj", "c_attn"], llama7b).modules.length, 32);
  throwsCode(() => resolveTargetModules(["q_proj", "c_attn"], llama7b, { strict: true }), "CONFIG_INVALID", "{c_attn}");
});

test("modules LoRA cannot wrap are refused", () => {
  throwsCode(() => resolveTargetModules(["lm_head"], llama7b), "UNSUPPORTED", "lm_head");
  throwsCode(() => resolveTargetModules(["embed_tokens", "q_proj"], llama7b), "UNSUPPORTED", "model.embed_tokens");
  throwsCode(() => resolveTargetModules(["mlp"], llama7b), "CONFIG_INVALID", "model.layers.0.mlp (not a Linear layer)");
});

test("exclude_modules and layers_to_transform", () => {
  const cfg = tinyLlama();
  const excluded = resolveTargetModules("all-linear", cfg, { exclude: { kind: "names", names: ["down_proj", "model.layers.0.self_attn.q_proj"] } });
  assert.deepEqual(excluded.byLayer, [
    ["k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"],
    ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"],
  ]);
  const layer1 = resolveTargetModules(["q_proj", "v_proj"], cfg, { layersToTransform: [1] });
  assert.deepEqual(layer1.byLayer, [[], ["q_proj", "v_proj"]]);
});

test("rank_pattern / alpha_pattern lookup: (.*\\.)?(key)$ from the start, first key wins", () => {
  const pattern: [string, number][] = [
    ["layers.1.self_attn.q_proj", 16],
    ["q_proj", 4],
    ["mlp\\..*", 2],
  ];
  assert.equal(patternValue(pattern, "model.layers.1.self_attn.q_proj"), 16);
  assert.equal(patternValue(pattern, "model.layers.0.self_attn.q_proj"), 4);
  assert.equal(patternValue(pattern, "model.layers.0.mlp.up_proj"), 2);
  assert.equal(patternValue(pattern, "model.layers.0.self_attn.v_proj"), undefined);
  // A key must cover a whole trailing component: "proj" does not match "q_proj".
  assert.equal(patternValue([["proj", 1]], "model.layers.0.self_attn.q_proj"), undefined);
});
