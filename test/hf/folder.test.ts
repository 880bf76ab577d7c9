import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile, mkdir, truncate, stat, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openModelFolder } from "../../src/hf/folder.ts";
import { writeRandomModel } from "../../src/hf/random-init.ts";
import { MODEL_PRESETS } from "../../src/hf/presets.ts";
import { writeSafetensors, type TensorToWrite } from "../../src/io/safetensors/writer.ts";
import { decodeToFloat32 } from "../../src/io/safetensors/convert.ts";
import { expectedWeights } from "../../src/hf/weights.ts";
import { parseModelConfig } from "../../src/hf/config.ts";
import { TunaError } from "../../src/util/errors.ts";

let root = "";
before(async () => {
  root = await mkdtemp(join(tmpdir(), "tuna-folder-"));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function rejectsWith(p: Promise<unknown>, code: string, ...fragments: string[]): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof TunaError, String(e));
    assert.equal(e.code, code, e.message);
    for (const f of fragments) assert.ok(e.message.includes(f), `message lacks "${f}": ${e.message}`);
    return true;
  });
}

test("every family round-trips: written random model opens and checks clean", async () => {
  for (const preset of ["tiny-llama", "tiny-llama3", "tiny-mistral", "tiny-qwen2"]) {
    const dir = join(root, preset);
    await writeRandomModel(dir, MODEL_PRESETS[preset]!, { seed: 1, dtype: "F32" });
    const folder = await openModelFolder(dir);
    try {
      const expected = expectedWeights(folder.config);
      assert.deepEqual(folder.weights.names(), expected.map((w) => w.name).sort());
      assert.deepEqual(folder.weightCheck.unexpected, []);
      // Norm weights were written as 1 + noise: check the values came back through the file.
      const norm = decodeToFloat32(await folder.weights.readTensor("model.norm.weight"), "F32");
      const mean = norm.reduce((a, b) => a + b, 0) / norm.length;
      assert.ok(Math.abs(mean - 1) < 0.1, `norm mean ${mean}`);
    } finally {
      await folder.weights.close();
    }
  }
});

test("a sharded random model opens through its index", async () => {
  const dir = join(root, "sharded");
  const files = await writeRandomModel(dir, MODEL_PRESETS["tiny-mistral"]!, { seed: 2, dtype: "BF16", maxShardBytes: 1_000_000 });
  assert.ok(files.some((f) => f.endsWith("model.safetensors.index.json")));
  const folder = await openModelFolder(dir);
  assert.ok(folder.weights.files.length > 2);
  await folder.weights.close();
});

test("wrong path, a file, a folder without config.json, a PEFT adapter folder", async () => {
  await rejectsWith(openModelFolder(join(root, "nope")), "FILE_NOT_FOUND", "nope");
  const file = join(root, "plain.txt");
  await writeFile(file, "x");
  await rejectsWith(openModelFolder(file), "MODEL_INVALID", "is a file");
  const empty = join(root, "empty");
  await mkdir(empty);
  await rejectsWith(openModelFolder(empty), "MODEL_INVALID", "no config.json");
  const adapter = join(root, "adapter");
  await mkdir(adapter);
  await writeFile(join(adapter, "adapter_config.json"), JSON.stringify({ base_model_name_or_path: "meta-llama/Llama-2-7b-hf", peft_type: "LORA" }));
  await rejectsWith(openModelFolder(adapter), "MODEL_INVALID", "PEFT adapter", "meta-llama/Llama-2-7b-hf");
});

test("config.json with a wrong type or an unsupported model_type", async () => {
  const dir = join(root, "badcfg");
  await writeRandomModel(dir, MODEL_PRESETS["tiny-llama"]!, { seed: 3, dtype: "F32" });
  const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  await writeFile(join(dir, "config.json"), JSON.stringify({ ...cfg, num_attention_heads: "four" }));
  await rejectsWith(openModelFolder(dir), "MODEL_INVALID", "config.json", "num_attention_heads");
  await writeFile(join(dir, "config.json"), JSON.stringify({ ...cfg, model_type: "gpt_neox" }));
  await rejectsWith(openModelFolder(dir), "MODEL_UNSUPPORTED", "gpt_neox");
  await writeFile(join(dir, "config.json"), "{ not json");
  await rejectsWith(openModelFolder(dir), "FILE_FORMAT", "config.json", "not valid JSON");
});

test("corrupt safetensors: truncated file", async () => {
  const dir = join(root, "truncated");
  await writeRandomModel(dir, MODEL_PRESETS["tiny-llama"]!, { seed: 4, dtype: "F32" });
  const path = join(dir, "model.safetensors");
  await truncate(path, (await stat(path)).size - 100);
  await rejectsWith(openModelFolder(dir), "FILE_FORMAT", "model.safetensors");
});

test("weights that do not fit the config name the tensors", async () => {
  const dir = join(root, "mismatch");
  await writeRandomModel(dir, MODEL_PRESETS["tiny-llama"]!, { seed: 5, dtype: "F32" });
  const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  // Claim 3 layers and a wider FFN than the checkpoint holds.
  await writeFile(join(dir, "config.json"), JSON.stringify({ ...cfg, num_hidden_layers: 3, intermediate_size: 200 }));
  await rejectsWith(
    openModelFolder(dir),
    "MODEL_INVALID",
    "missing tensor model.layers.2.input_layernorm.weight",
    "model.layers.0.mlp.gate_proj.weight: shape [176, 64] does not match the config's [200, 64]",
  );
});

function zeros(name: string, dtype: TensorToWrite["dtype"], shape: number[], bytes: number): TensorToWrite {
  return { name, dtype, shape, data: new Uint8Array(bytes) };
}

test("a bitsandbytes NF4 checkpoint: packed weights and their quant-state tensors", async () => {
  const dir = join(root, "bnb");
  await mkdir(dir);
  const hf = {
    ...MODEL_PRESETS["tiny-llama"]!,
    quantization_config: {
      quant_method: "bitsandbytes", load_in_4bit: true, load_in_8bit: false, bnb_4bit_quant_type: "nf4",
      bnb_4bit_use_double_quant: false, bnb_4bit_quant_storage: "uint8", bnb_4bit_compute_dtype: "bfloat16",
    },
  };
  const cfg = parseModelConfig(hf, "c");
  const tensors: TensorToWrite[] = [];
  for (const w of expectedWeights(cfg)) {
    const n = w.shape.reduce((a, b) => a * b, 1);
    if (!w.quantizable) {
      tensors.push(zeros(w.name, "BF16", w.shape, n * 2));
      continue;
    }
    // bnb layout: [n/2, 1] uint8 codes, fp32 absmax per 64, the 16-entry map, and the JSON quant state.
    tensors.push(zeros(w.name, "U8", [n / 2, 1], n / 2));
    tensors.push(zeros(`${w.name}.absmax`, "F32", [n / 64], (n / 64) * 4));
    tensors.push(zeros(`${w.name}.quant_map`, "F32", [16], 64));
    tensors.push(zeros(`${w.name}.quant_state.bitsandbytes__nf4`, "U8", [10], 10));
  }
  await writeFile(join(dir, "config.json"), JSON.stringify(hf));
  await writeSafetensors(join(dir, "model.safetensors"), tensors);
  const folder = await openModelFolder(dir);
  assert.equal(folder.weightCheck.quantized, 2 * 7);
  assert.deepEqual(folder.weightCheck.unexpected, []);
  await folder.weights.close();

  // Drop one layer's quant state: the error names that tensor.
  const missing = "model.layers.1.mlp.up_proj.weight.quant_state.bitsandbytes__nf4";
  await writeSafetensors(join(dir, "model.safetensors"), tensors.filter((t) => t.name !== missing));
  await rejectsWith(openModelFolder(dir), "MODEL_INVALID", `missing quantization state ${missing}`);
});
