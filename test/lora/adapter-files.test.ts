import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { isTunaError } from "../../src/util/errors.ts";
import { createRng } from "../../src/util/random.ts";
import { writeSafetensors } from "../../src/io/safetensors/writer.ts";
import { encodeFromFloat32 } from "../../src/io/safetensors/convert.ts";
import { makeLoraSettings } from "../../src/lora/settings.ts";
import { initLoraWeights } from "../../src/lora/init.ts";
import { readAdapter, writeAdapter, type AdapterDtype } from "../../src/lora/adapter-files.ts";
import { FIXTURES, tinyLlama, withTempDir } from "./helpers.ts";

const SEED_CONFIG = { r: 8, alpha: 16, dropout: 0.1, targetModules: "all-linear" as const, baseModelNameOrPath: "/tmp/base-untied" };

async function rejectsWith(promise: Promise<unknown>, code: string, ...fragments: string[]): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(isTunaError(e), `expected a TunaError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const f of fragments) assert.ok(e.message.includes(f), `message lacks "${f}": ${e.message}`);
    return true;
  });
}

test("round trip: write then read gives the same settings and tensors (f32 exact, bf16 rounded)", async () => {
  const cfg = tinyLlama();
  const settings = makeLoraSettings({ ...SEED_CONFIG, trainableTokenIndices: { embed_tokens: [62, 63], lm_head: [63] } }, cfg);
  const params = initLoraWeights(settings, cfg, createRng(5));
  // Non-zero B and token rows so that every tensor carries information.
  for (let i = 0; i < params.flat.length; i++) if (params.flat[i] === 0) params.flat[i] = Math.sin(i) * 0.01;
  await withTempDir(async (dir) => {
    for (const dtype of ["float32", "bfloat16"] as AdapterDtype[]) {
      const out = join(dir, dtype);
      await writeAdapter(out, { settings, params, embeddings: null }, { dtype });
      const back = await readAdapter(out, cfg);
      assert.deepEqual(back.settings.targetModules, settings.targetModules);
      assert.deepEqual([back.settings.r, back.settings.alpha, back.settings.dropout], [8, 16, 0.1]);
      assert.deepEqual(back.settings.trainableTokens, settings.trainableTokens);
      assert.deepEqual(back.params.layout, params.layout);
      if (dtype === "float32") assert.deepEqual(back.params.flat, params.flat);
      else for (const [i, v] of params.flat.entries()) assert.ok(Math.abs((back.params.flat[i] ?? NaN) - v) <= Math.abs(v) * 2 ** -8);
      assert.deepEqual((await readdir(out)).sort(), ["adapter_config.json", "adapter_model.safetensors"]);
    }
    // Nothing staged is left beside the adapters.
    assert.deepEqual((await readdir(dir)).sort(), ["bfloat16", "float32"]);
  });
});

test("PEFT's files: read, then written back byte for byte (safetensors) and text for text (config)", async () => {
  const cases: [string, Parameters<typeof tinyLlama>[0], AdapterDtype][] = [
    ["peft-seed", {}, "float32"],
    ["peft-patterns", {}, "bfloat16"],
    ["peft-resized", {}, "float32"],
    ["peft-tied", { tie: true }, "float32"],
  ];
  await withTempDir(async (dir) => {
    for (const [name, shape, dtype] of cases) {
      const adapter = await readAdapter(join(FIXTURES, name), tinyLlama(shape));
      const out = join(dir, name);
      await writeAdapter(out, adapter, { dtype });
      const original = await readFile(join(FIXTURES, name, "adapter_model.safetensors"));
      assert.ok((await readFile(join(out, "adapter_model.safetensors"))).equals(original), `${name}: safetensors bytes differ`);
      const ours = JSON.parse(await readFile(join(out, "adapter_config.json"), "utf8")) as Record<string, unknown>;
      const theirs = JSON.parse(await readFile(join(FIXTURES, name, "adapter_config.json"), "utf8")) as Record<string, unknown>;
      if (Array.isArray(theirs["target_modules"])) theirs["target_modules"] = [...(theirs["target_modules"] as string[])].sort();
      assert.deepEqual(ours, theirs, `${name}: config differs`);
    }
  });
});

test("PEFT's files: what the reader finds in them", async () => {
  const seed = await readAdapter(join(FIXTURES, "peft-seed"), tinyLlama());
  assert.equal(seed.params.layout.modules.length, 14);
  for (const m of seed.params.layout.modules) {
    const t = seed.params.byModule.get(m.name);
    assert.ok(t !== undefined);
    // PEFT's own init: A within the kaiming-uniform bound 1/sqrt(in), B zero.
    assert.ok(t.a.every((x) => Math.abs(x) <= Math.fround(1 / Math.sqrt(m.inFeatures))) && t.a.some((x) => x !== 0), m.name);
    assert.ok(t.b.every((x) => x === 0), m.name);
  }
  const patterns = await readAdapter(join(FIXTURES, "peft-patterns"), tinyLlama());
  const [q, v] = patterns.params.layout.modules;
  assert.deepEqual([q?.r, q?.scaling, v?.r, v?.scaling], [8, 32 / Math.sqrt(8), 4, 16 / Math.sqrt(4)]);
  assert.deepEqual(
    patterns.params.layout.tokens.map((t) => [t.module, t.indices, t.shape]),
    [
      ["embed_tokens", [60, 61], [2, 16]],
      ["lm_head", [60, 61], [2, 16]],
    ],
  );
  const resized = await readAdapter(join(FIXTURES, "peft-resized"), tinyLlama());
  assert.equal(resized.embeddings?.vocabSize, 72);
  assert.equal(resized.embeddings.embedTokens?.length, 72 * 16);
  assert.equal(resized.embeddings.lmHead?.length, 72 * 16);
  const tied = await readAdapter(join(FIXTURES, "peft-tied"), tinyLlama({ tie: true }));
  assert.deepEqual(
    tied.params.layout.modules.map((m) => m.name),
    ["model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj"],
  );
  assert.deepEqual(tied.settings.trainableTokens, { form: "list", embedTokens: [1, 5], lmHead: [] });
});

/** A hand-made adapter folder in the style of older PEFT versions (few config keys). */
async function handMade(dir: string, config: Record<string, unknown>, tensors: Record<string, { shape: [number, number] | [number]; fill: (i: number) => number }>): Promise<string> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "adapter_config.json"), JSON.stringify(config));
  await writeSafetensors(
    join(dir, "adapter_model.safetensors"),
    Object.entries(tensors).map(([name, t]) => ({
      name,
      dtype: "F32",
      shape: t.shape,
      data: encodeFromFloat32(Float32Array.from({ length: t.shape.reduce((a, b) => a * b, 1) }, (_, i) => t.fill(i)), "F32"),
    })),
  );
  return dir;
}

const HAND_CONFIG = {
  base_model_name_or_path: "meta-llama/Llama-2-7b-hf",
  peft_type: "LORA",
  task_type: "CAUSAL_LM",
  r: 4,
  lora_alpha: 8,
  lora_dropout: 0.05,
  bias: "none",
  target_modules: ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"],
  inference_mode: true,
};

test("a hand-made PEFT-style folder: full module names, keys with and without the adapter name", async () => {
  const cfg = tinyLlama();
  await withTempDir(async (dir) => {
    for (const adapterName of ["", ".default"]) {
      const folder = await handMade(join(dir, `hand${adapterName}`), HAND_CONFIG, {
        [`base_model.model.model.layers.0.self_attn.q_proj.lora_A${adapterName}.weight`]: { shape: [4, 16], fill: (i) => i / 64 },
        [`base_model.model.model.layers.0.self_attn.q_proj.lora_B${adapterName}.weight`]: { shape: [16, 4], fill: (i) => -i / 64 },
        [`base_model.model.model.layers.1.mlp.down_proj.lora_A${adapterName}.weight`]: { shape: [4, 40], fill: () => 0.5 },
        [`base_model.model.model.layers.1.mlp.down_proj.lora_B${adapterName}.weight`]: { shape: [16, 4], fill: () => 2 },
      });
      const adapter = await readAdapter(folder, cfg);
      assert.deepEqual(adapter.settings.targetSpec, { kind: "names", names: HAND_CONFIG.target_modules });
      assert.deepEqual(adapter.settings.targetModules.map((m) => m.name), HAND_CONFIG.target_modules);
      assert.equal(adapter.settings.baseModelNameOrPath, "meta-llama/Llama-2-7b-hf");
      const q = adapter.params.byModule.get("model.layers.0.self_attn.q_proj");
      assert.deepEqual(Array.from(q?.a.subarray(0, 3) ?? []), [0, 1 / 64, 2 / 64]);
      assert.equal(q?.b[63], -63 / 64);
      const down = adapter.params.byModule.get("model.layers.1.mlp.down_proj");
      assert.ok(down?.a.every((x) => x === 0.5) && down.b.every((x) => x === 2));
      assert.equal(adapter.params.layout.modules[1]?.scaling, 2);
    }
  });
});

test("DoRA: lora_magnitude_vector read under PEFT's key and the older ones (adapter name, .weight); mismatches named", async () => {
  const cfg = tinyLlama();
  const dora = { ...HAND_CONFIG, use_dora: true };
  await withTempDir(async (dir) => {
    for (const suffix of ["", ".default", ".default.weight", ".weight"]) {
      const folder = await handMade(join(dir, `dora${suffix}`), dora, {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": { shape: [4, 16], fill: () => 1 },
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": { shape: [16, 4], fill: () => 1 },
        [`base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector${suffix}`]: { shape: [16], fill: (i) => i + 0.5 },
        "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight": { shape: [4, 40], fill: () => 1 },
        "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight": { shape: [16, 4], fill: () => 1 },
        [`base_model.model.model.layers.1.mlp.down_proj.lora_magnitude_vector${suffix}`]: { shape: [16], fill: () => 3 },
      });
      const adapter = await readAdapter(folder, cfg);
      assert.equal(adapter.settings.useDora, true, suffix);
      assert.deepEqual(Array.from(adapter.params.byModule.get("model.layers.0.self_attn.q_proj")!.magnitude!.subarray(0, 3)), [0.5, 1.5, 2.5]);
      assert.ok(adapter.params.byModule.get("model.layers.1.mlp.down_proj")!.magnitude!.every((v) => v === 3));
    }
    const ab = {
      "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": { shape: [4, 16] as [number, number], fill: () => 1 },
      "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": { shape: [16, 4] as [number, number], fill: () => 1 },
      "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight": { shape: [4, 40] as [number, number], fill: () => 1 },
      "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight": { shape: [16, 4] as [number, number], fill: () => 1 },
    };
    const magnitude = "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector";
    const notDora = await handMade(join(dir, "not-dora"), HAND_CONFIG, { ...ab, [magnitude]: { shape: [16], fill: () => 1 } });
    await rejectsWith(readAdapter(notDora, cfg), "MODEL_INVALID", `tensor ${magnitude} is DoRA's magnitude`, 'has no "use_dora": true');
    const missing = await handMade(join(dir, "missing"), dora, { ...ab, [magnitude]: { shape: [16], fill: () => 1 } });
    await rejectsWith(readAdapter(missing, cfg), "MODEL_INVALID", "lacks 1 tensor(s)", "down_proj.lora_magnitude_vector");
    const wrong = await handMade(join(dir, "wrong"), dora, { ...ab, [magnitude]: { shape: [8], fill: () => 1 } });
    await rejectsWith(readAdapter(wrong, cfg), "MODEL_INVALID", `tensor ${magnitude} has shape [8]`, "needs [16]");
  });
});

test("tensors that do not fit the model: MODEL_INVALID naming the tensor and the module", async () => {
  const cfg = tinyLlama();
  const ok = {
    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": { shape: [4, 16] as [number, number], fill: () => 1 },
    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": { shape: [16, 4] as [number, number], fill: () => 1 },
    "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight": { shape: [4, 40] as [number, number], fill: () => 1 },
    "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight": { shape: [16, 4] as [number, number], fill: () => 1 },
  };
  await withTempDir(async (dir) => {
    const wrongRank = await handMade(join(dir, "rank"), { ...HAND_CONFIG, r: 8 }, ok);
    await rejectsWith(
      readAdapter(wrongRank, cfg),
      "MODEL_INVALID",
      "tensor base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight has shape [4, 16]",
      "module model.layers.0.self_attn.q_proj",
      "rank 8",
      "needs lora_A [8, 16]",
    );
    const layer5 = "base_model.model.model.layers.5.self_attn.q_proj.lora_A.weight";
    const noSuchModule = await handMade(join(dir, "module"), HAND_CONFIG, { ...ok, [layer5]: { shape: [4, 16], fill: () => 0 } });
    await rejectsWith(readAdapter(noSuchModule, cfg), "MODEL_INVALID", `tensor ${layer5}`, "module model.layers.5.self_attn.q_proj", "the model has no such module");
    const notTargeted = "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight";
    const extra = await handMade(join(dir, "extra"), HAND_CONFIG, { ...ok, [notTargeted]: { shape: [8, 4], fill: () => 0 } });
    await rejectsWith(readAdapter(extra, cfg), "MODEL_INVALID", `tensor ${notTargeted}`, "target_modules does not select it");
    const partial = Object.fromEntries(Object.entries(ok).filter(([name]) => !name.endsWith("down_proj.lora_B.weight")));
    const missing = await handMade(join(dir, "missing"), HAND_CONFIG, partial);
    await rejectsWith(readAdapter(missing, cfg), "MODEL_INVALID", "lacks 1 tensor(s)", "down_proj.lora_B.weight");
    // PEFT's seed adapter against a wider model (C = 32): the first tensor in name order is down_proj's lora_B.
    await rejectsWith(
      readAdapter(join(FIXTURES, "peft-seed"), { ...cfg, hiddenSize: 32 }),
      "MODEL_INVALID",
      "tensor base_model.model.model.layers.0.mlp.down_proj.lora_B.weight has shape [16, 8]",
      "needs lora_B [32, 8]",
    );
    await rejectsWith(readAdapter(join(dir, "nowhere"), cfg), "FILE_NOT_FOUND", "adapter_config.json");
  });
});

test("writing into an existing folder keeps its other files and replaces the adapter", async () => {
  const cfg = tinyLlama();
  await withTempDir(async (dir) => {
    await writeFile(join(dir, "trainer_state.json"), "{}");
    const firstSettings = makeLoraSettings({ r: 2, alpha: 4, targetModules: ["q_proj"] }, cfg);
    await writeAdapter(dir, { settings: firstSettings, params: initLoraWeights(firstSettings, cfg, createRng(1)), embeddings: null });
    const secondSettings = makeLoraSettings({ r: 4, alpha: 8, targetModules: ["v_proj"] }, cfg);
    await writeAdapter(dir, { settings: secondSettings, params: initLoraWeights(secondSettings, cfg, createRng(2)), embeddings: null });
    assert.deepEqual((await readdir(dir)).sort(), ["adapter_config.json", "adapter_model.safetensors", "trainer_state.json"]);
    const back = await readAdapter(dir, cfg);
    assert.deepEqual(back.settings.targetModules.map((m) => m.linear), ["v_proj", "v_proj"]);
    assert.equal(back.settings.r, 4);
  });
});
