import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createCpuBackend } from "../../src/backend/cpu/index.ts";
import { openWeights } from "../../src/io/safetensors/checkpoint.ts";
import { decodeToFloat32 } from "../../src/io/safetensors/convert.ts";
import { writeSafetensors, type TensorToWrite } from "../../src/io/safetensors/writer.ts";
import { writeAdapter } from "../../src/lora/adapter-files.ts";
import { allocateLoraParams } from "../../src/lora/init.ts";
import { loraLayout } from "../../src/lora/layout.ts";
import { makeLoraSettings } from "../../src/lora/settings.ts";
import { batchFromDocuments } from "../../src/data/batch.ts";
import { parseModelConfig, type ModelConfig } from "../../src/hf/config.ts";
import { expectedWeights } from "../../src/hf/weights.ts";
import { openModelForUse } from "../../src/train/open-model.ts";
import { createCausalLm, forward, lastLogits, uploadBatch } from "../../src/model/causal-lm/model.ts";
import { mergeAdapter } from "../../src/lora/merge.ts";
import { dequantizeQuantized4bit, quantizedTensorsToWrite } from "../../src/quant/bnb-checkpoint.ts";
import { int8TensorsToWrite, quantizeInt8Rowwise } from "../../src/quant/int8.ts";
import { quantizeTensor4bit } from "../../src/quant/quantize-model.ts";
import { createRng } from "../../src/util/random.ts";
import { GOLDEN, relativeError } from "../model/causal-lm/golden-harness.ts";
import { TINY, writeTiny } from "../model/causal-lm/tiny-model.ts";

const roots: string[] = [];
after(async () => {
  for (const r of roots) await rm(r, { recursive: true, force: true });
});
async function tempRoot(): Promise<string> {
  const r = await mkdtemp(join(tmpdir(), "tuna-merge-"));
  roots.push(r);
  return r;
}

/** Logits (N, V) of `ids` from a folder, optionally with an adapter applied on the fly. */
async function logits(modelDir: string, ids: number[], adapterDir?: string): Promise<Float32Array> {
  const backend = createCpuBackend();
  const opened = await openModelForUse(backend, modelDir, { baseDtype: "f32", ...(adapterDir === undefined ? {} : { adapterDir }) });
  const model = createCausalLm(backend, opened.params, { checkpointing: false, seed: 0 });
  await forward(model, uploadBatch(model, batchFromDocuments([{ inputIds: ids }])));
  return lastLogits(model);
}

async function readTensor(dir: string, name: string): Promise<{ values: Float32Array; dtype: string; shape: number[] }> {
  const w = await openWeights(dir);
  try {
    const info = w.info(name);
    return { values: decodeToFloat32(await w.readTensor(name), info.dtype), dtype: info.dtype, shape: info.shape };
  } finally {
    await w.close();
  }
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
}

function randomFill(values: Float32Array, rng: ReturnType<typeof createRng>, std: number): void {
  for (let i = 0; i < values.length; i++) values[i] = std * rng.normal();
}

test("golden llama: the merged folder computes the adapter model's logits (float32, one file and shards)", async () => {
  const root = await tempRoot();
  const base = join(GOLDEN, "llama/model");
  const adapter = join(GOLDEN, "llama/adapter");
  const ids = [1, 17, 200, 45, 3, 99, 255, 0, 128];
  const expected = await logits(base, ids, adapter);
  assert.ok(relativeError(await logits(base, ids), expected) > 1e-3, "the adapter must change the logits for this test to mean anything");

  const out = join(root, "merged");
  const result = await mergeAdapter(base, { adapterDir: adapter, outputDir: out, dtype: "float32" });
  assert.equal(result.mergedModules, 14);
  assert.deepEqual(result.weightFiles, ["model.safetensors"]);
  assert.ok(relativeError(await logits(out, ids), expected) < 1e-5);

  const config = await readJson(join(out, "config.json"));
  assert.equal(config["dtype"], "float32");
  assert.equal(config["vocab_size"], 256);
  assert.deepEqual(await readFile(join(out, "generation_config.json")), await readFile(join(base, "generation_config.json")));
  assert.deepEqual((await readdir(root)).sort(), ["merged"], "no staging folder is left behind");
  const w = await openWeights(out);
  assert.deepEqual(w.names().sort(), expectedWeights(parseModelConfig(config, "merged")).map((e) => e.name).sort());
  await w.close();

  const sharded = join(root, "sharded");
  const r2 = await mergeAdapter(base, { adapterDir: adapter, outputDir: sharded, dtype: "float32", maxShardBytes: 100_000 });
  assert.ok(r2.weightFiles.length > 2 && r2.weightFiles.includes("model.safetensors.index.json"), r2.weightFiles.join(", "));
  assert.ok(relativeError(await logits(sharded, ids), expected) < 1e-5);
});

for (const tied of [false, true]) {
  test(`resized vocabulary with trainable token rows (${tied ? "tied" : "untied"} embeddings): saved matrices and rows land in the merged embedding`, async () => {
    const { dir: base, cfg } = await writeTiny({ ...TINY, tie_word_embeddings: tied });
    roots.push(dirname(base));
    const C = cfg.hiddenSize;
    const V2 = cfg.vocabSize + 8;
    const resized: ModelConfig = { ...cfg, vocabSize: V2 };
    const newIds = [cfg.vocabSize, cfg.vocabSize + 3];
    const settings = makeLoraSettings(
      { r: 2, alpha: 6, targetModules: ["q_proj", "down_proj"], trainableTokenIndices: tied ? newIds : { embed_tokens: newIds, lm_head: [newIds[1]!] } },
      resized,
    );
    const rng = createRng(7);
    const params = allocateLoraParams(loraLayout(settings, resized));
    randomFill(params.flat, rng, 0.3);
    const embedTokens = new Float32Array(V2 * C);
    randomFill(embedTokens, rng, 0.5);
    const lmHead = tied ? null : new Float32Array(V2 * C);
    if (lmHead !== null) randomFill(lmHead, rng, 0.5);
    const adapterDir = join(dirname(base), "adapter");
    await writeAdapter(adapterDir, { settings, params, embeddings: { vocabSize: V2, embedTokens, lmHead } });
    // A chat run saves its extended tokenizer beside the adapter; the merge must take that one.
    await writeFile(join(base, "tokenizer.json"), '{"from":"base"}');
    await writeFile(join(adapterDir, "tokenizer.json"), '{"from":"adapter"}');
    await writeFile(join(adapterDir, "tokenizer_config.json"), '{"from":"adapter"}');

    const out = join(dirname(base), "merged");
    const result = await mergeAdapter(base, { adapterDir, outputDir: out, dtype: "float32" });
    assert.equal(result.vocabSize, V2);
    assert.equal((await readJson(join(out, "config.json")))["vocab_size"], V2);
    assert.equal(await readFile(join(out, "tokenizer.json"), "utf8"), '{"from":"adapter"}');
    assert.equal(await readFile(join(out, "tokenizer_config.json"), "utf8"), '{"from":"adapter"}');

    const embed = await readTensor(out, "model.embed_tokens.weight");
    assert.deepEqual(embed.shape, [V2, C]);
    const rows = params.tokenRows.get("embed_tokens")!;
    const expectedEmbed = embedTokens.slice();
    newIds.forEach((id, j) => {
      expectedEmbed.set(rows.subarray(j * C, (j + 1) * C), id * C);
    });
    assert.deepEqual(embed.values, expectedEmbed);
    if (lmHead !== null) {
      const head = await readTensor(out, "lm_head.weight");
      const expectedHead = lmHead.slice();
      expectedHead.set(params.tokenRows.get("lm_head")!, newIds[1]! * C);
      assert.deepEqual(head.values, expectedHead);
    }
    const ids = [5, newIds[0]!, 40, newIds[1]!, V2 - 1, 2];
    assert.ok(relativeError(await logits(out, ids), await logits(base, ids, adapterDir)) < 1e-5);
  });
}

/** The tiny model saved the way bitsandbytes saves a load_in_4bit (nf4, double quant) or load_in_8bit model. */
async function writePrequantized(base: string, cfg: ModelConfig, kind: "4bit" | "8bit"): Promise<string> {
  const dir = join(dirname(base), `prequant-${kind}`);
  await mkdir(dir);
  const weights = await openWeights(base);
  const tensors: TensorToWrite[] = [];
  for (const w of expectedWeights(cfg)) {
    const bytes = await weights.readTensor(w.name);
    if (!w.quantizable) tensors.push({ name: w.name, dtype: "F32", shape: w.shape, data: bytes });
    else if (kind === "4bit") tensors.push(...quantizedTensorsToWrite(w.name, quantizeTensor4bit(bytes, "F32", w.shape, { quantType: "nf4", doubleQuant: true }, w.name)));
    else tensors.push(...int8TensorsToWrite(w.name, quantizeInt8Rowwise(bytes, "F32", w.shape[0]!, w.shape[1]!, w.name)));
  }
  await weights.close();
  await writeSafetensors(join(dir, "model.safetensors"), tensors);
  const hf = await readJson(join(base, "config.json"));
  hf["quantization_config"] =
    kind === "4bit"
      ? { quant_method: "bitsandbytes", load_in_4bit: true, bnb_4bit_quant_type: "nf4", bnb_4bit_use_double_quant: true }
      : { quant_method: "bitsandbytes", load_in_8bit: true };
  await writeFile(join(dir, "config.json"), JSON.stringify(hf));
  return dir;
}

for (const kind of ["4bit", "8bit"] as const) {
  test(`a bitsandbytes ${kind} base merges to a dequantized bf16 folder with the adapter-on-quantized-base logits`, async () => {
    const { dir: base, cfg } = await writeTiny();
    roots.push(dirname(base));
    const prequant = await writePrequantized(base, cfg, kind);
    const settings = makeLoraSettings({ r: 4, alpha: 8, targetModules: "all-linear", useRslora: true, rankPattern: { down_proj: 2 } }, cfg);
    const params = allocateLoraParams(loraLayout(settings, cfg));
    randomFill(params.flat, createRng(3), 0.2);
    const adapterDir = join(dirname(base), "adapter");
    await writeAdapter(adapterDir, { settings, params, embeddings: null });

    const out = join(dirname(base), "merged");
    const result = await mergeAdapter(prequant, { adapterDir, outputDir: out });
    assert.equal(result.dtype, "bfloat16");
    assert.equal(result.dequantized, kind);
    const config = await readJson(join(out, "config.json"));
    assert.equal(config["quantization_config"], undefined);
    assert.equal(config["torch_dtype"], "bfloat16");
    const w = await openWeights(out);
    assert.deepEqual(w.names().sort(), expectedWeights(cfg).map((e) => e.name).sort(), "no absmax / quant_state / SCB tensors");
    assert.ok(w.names().every((n) => w.info(n).dtype === "BF16"));
    await w.close();

    // One weight against W_deq + alpha/sqrt(r) * B @ A, worked out here, to bf16 rounding.
    if (kind === "4bit") {
      const name = "model.layers.1.mlp.down_proj";
      const m = params.layout.modules.find((x) => x.name === name)!;
      assert.equal(m.r, 2);
      const { a, b } = params.byModule.get(name)!;
      const raw = await readTensor(base, `${name}.weight`);
      const deq = dequantizeQuantized4bit(quantizeTensor4bit(new Uint8Array(raw.values.buffer), "F32", raw.shape, { quantType: "nf4", doubleQuant: true }, name));
      const [O, I] = raw.shape as [number, number];
      const merged = (await readTensor(out, `${name}.weight`)).values;
      for (let o = 0; o < O; o++) {
        for (let i = 0; i < I; i++) {
          let d = 0;
          for (let k = 0; k < 2; k++) d += b[o * 2 + k]! * a[k * I + i]!;
          const want = deq[o * I + i]! + (8 / Math.sqrt(2)) * d;
          assert.ok(Math.abs(merged[o * I + i]! - want) <= Math.abs(want) * 2 ** -8 + 1e-30, `${name}[${o}, ${i}]: ${merged[o * I + i]} vs ${want}`);
        }
      }
    }
    const ids = [3, 50, 7, 91, 12, 64, 33];
    const expected = await logits(prequant, ids, adapterDir);
    // bf16 weights through this small-init model move the logits by about 1.5%; the adapter by ~140%.
    const err = relativeError(await logits(out, ids), expected);
    assert.ok(err < 2.5e-2, `relative error ${err}`);
    assert.ok(relativeError(await logits(prequant, ids), expected) > 30 * err, "the adapter changes the logits far more than bf16 rounding");
    // In float32 the dequantized merge is the quantized model with its adapter, to float rounding.
    const out32 = join(dirname(base), "merged-f32");
    await mergeAdapter(prequant, { adapterDir, outputDir: out32, dtype: "float32" });
    assert.ok(relativeError(await logits(out32, ids), expected) < 1e-5);
  });
}

test("DoRA: the adapter file (lora_magnitude_vector keys, use_dora) read back and merged computes the adapter model's logits", async () => {
  const { dir: base, cfg } = await writeTiny({ ...TINY, model_type: "qwen2", tie_word_embeddings: false });
  roots.push(dirname(base));
  const settings = makeLoraSettings({ r: 3, alpha: 6, targetModules: ["q_proj", "v_proj", "down_proj"], useDora: true }, cfg);
  const params = allocateLoraParams(loraLayout(settings, cfg));
  const rng = createRng(9);
  randomFill(params.flat, rng, 0.3);
  // Magnitudes near the rows' norms (what training starts from), so the merged weights are of a normal size.
  for (const t of params.byModule.values()) for (let i = 0; i < t.magnitude!.length; i++) t.magnitude![i] = 1 + 0.5 * rng.uniform();
  const root = await tempRoot();
  const adapter = join(root, "adapter");
  await writeAdapter(adapter, { settings, params, embeddings: null });
  const config = await readJson(join(adapter, "adapter_config.json"));
  assert.equal(config["use_dora"], true);
  const magnitude = await readTensor(join(adapter, "adapter_model.safetensors"), "base_model.model.model.layers.1.mlp.down_proj.lora_magnitude_vector");
  assert.deepEqual(magnitude.shape, [cfg.hiddenSize]);
  assert.deepEqual(magnitude.values, params.byModule.get("model.layers.1.mlp.down_proj")!.magnitude);

  const ids = [3, 17, 40, 45, 9, 60, 2];
  const expected = await logits(base, ids, adapter);
  assert.ok(relativeError(await logits(base, ids), expected) > 1e-3, "the adapter must change the logits");
  const out = join(root, "merged");
  const result = await mergeAdapter(base, { adapterDir: adapter, outputDir: out, dtype: "float32" });
  assert.equal(result.mergedModules, 2 * 3);
  assert.ok(relativeError(await logits(out, ids), expected) < 1e-5);
});

test("Phi-3: an adapter on the fused qkv_proj / gate_up_proj (with DoRA) merges into the fused weights and computes the adapter's logits", async () => {
  const { dir: base, cfg } = await writeTiny({ ...TINY, model_type: "phi3", tie_word_embeddings: false });
  roots.push(dirname(base));
  const settings = makeLoraSettings({ r: 3, alpha: 6, targetModules: "all-linear", useDora: true }, cfg);
  const params = allocateLoraParams(loraLayout(settings, cfg));
  const rng = createRng(13);
  randomFill(params.flat, rng, 0.3);
  for (const t of params.byModule.values()) for (let i = 0; i < t.magnitude!.length; i++) t.magnitude![i] = 1 + 0.5 * rng.uniform();
  const root = await tempRoot();
  const adapter = join(root, "adapter");
  await writeAdapter(adapter, { settings, params, embeddings: null });
  const a = await readTensor(join(adapter, "adapter_model.safetensors"), "base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight");
  assert.deepEqual(a.shape, [64, 3]);
  const ids = [3, 17, 40, 45, 9, 60, 2];
  const expected = await logits(base, ids, adapter);
  assert.ok(relativeError(await logits(base, ids), expected) > 1e-3, "the adapter must change the logits");
  const out = join(root, "merged");
  await mergeAdapter(base, { adapterDir: adapter, outputDir: out, dtype: "float32" });
  assert.ok(relativeError(await logits(out, ids), expected) < 1e-5);
});
