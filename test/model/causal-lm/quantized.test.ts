import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, writeFile, mkdir } from "node:fs/promises";
import { join, dirname } from "node:path";
import { createCpuBackend } from "../../../src/backend/cpu/index.ts";
import { openWeights } from "../../../src/io/safetensors/checkpoint.ts";
import { writeSafetensors, type TensorToWrite } from "../../../src/io/safetensors/writer.ts";
import { encodeFromFloat32, decodeToFloat32 } from "../../../src/io/safetensors/convert.ts";
import { parseModelConfig, type ModelConfig } from "../../../src/hf/config.ts";
import { expectedWeights } from "../../../src/hf/weights.ts";
import { batchFromDocuments } from "../../../src/data/batch.ts";
import { loadCausalLmParams, type LoadOptions } from "../../../src/model/causal-lm/load.ts";
import { createCausalLm, forward, lastLogits, uploadBatch } from "../../../src/model/causal-lm/model.ts";
import { dequantizeQuantized4bit, quantizedTensorsToWrite } from "../../../src/quant/bnb-checkpoint.ts";
import { quantizeTensor4bit } from "../../../src/quant/quantize-model.ts";
import { dequantizeInt8Rowwise, quantizeInt8Rowwise } from "../../../src/quant/int8.ts";
import { TINY, sampleDocs, writeTiny } from "./tiny-model.ts";

async function logitsOf(dir: string, cfg: ModelConfig, options: Partial<LoadOptions>): Promise<Float32Array> {
  const backend = createCpuBackend();
  const weights = await openWeights(dir);
  const params = await loadCausalLmParams(backend, cfg, weights, { mode: "lora", baseDtype: "f32", ...options });
  await weights.close();
  const model = createCausalLm(backend, params, { checkpointing: false, seed: 0 });
  await forward(model, uploadBatch(model, batchFromDocuments(sampleDocs(cfg.vocabSize))));
  return lastLogits(model);
}

/** A copy of the model whose linear weights are replaced by `transform(values)`, written as f32. */
async function rewrite(dir: string, cfg: ModelConfig, out: string, transform: (name: string, bytes: Uint8Array, shape: number[]) => Float32Array): Promise<void> {
  const weights = await openWeights(dir);
  const tensors: TensorToWrite[] = [];
  for (const w of expectedWeights(cfg)) {
    const bytes = await weights.readTensor(w.name);
    const values = w.quantizable ? transform(w.name, bytes, w.shape) : decodeToFloat32(bytes, "F32");
    tensors.push({ name: w.name, dtype: "F32", shape: w.shape, data: encodeFromFloat32(values, "F32") });
  }
  await weights.close();
  await mkdir(out, { recursive: true });
  await writeFile(join(out, "config.json"), await readFile(join(dir, "config.json")));
  await writeSafetensors(join(out, "model.safetensors"), tensors);
}

test("QLoRA base: NF4 with double quant computes exactly with dequantize(quantize(W))", async () => {
  const { dir, cfg } = await writeTiny();
  const opts = { quantType: "nf4" as const, doubleQuant: true };
  const reference = join(dirname(dir), "dequantized");
  await rewrite(dir, cfg, reference, (name, bytes, shape) => dequantizeQuantized4bit(quantizeTensor4bit(bytes, "F32", shape, opts, name)));
  const quantized = await logitsOf(dir, cfg, { quantize: { kind: "4bit", ...opts } });
  const dense = await logitsOf(reference, cfg, {});
  assert.deepEqual(quantized, dense);
  // And it really is quantized: different from the original weights' logits.
  assert.notDeepEqual(await logitsOf(dir, cfg, {}), quantized);
});

for (const [what, config] of [["llama", TINY], ["phi3 (fused qkv_proj / gate_up_proj cut into their parts' blocks)", { ...TINY, model_type: "phi3", tie_word_embeddings: false }]] as const)
test(`a bitsandbytes pre-quantized checkpoint loads to the same model as quantizing at load: ${what}`, async () => {
  const { dir, cfg } = await writeTiny(config);
  const opts = { quantType: "fp4" as const, doubleQuant: false };
  const prequant = join(dirname(dir), "prequant");
  await mkdir(prequant);
  const weights = await openWeights(dir);
  const tensors: TensorToWrite[] = [];
  for (const w of expectedWeights(cfg)) {
    const bytes = await weights.readTensor(w.name);
    if (w.quantizable) tensors.push(...quantizedTensorsToWrite(w.name, quantizeTensor4bit(bytes, "F32", w.shape, opts, w.name)));
    else tensors.push({ name: w.name, dtype: "F32", shape: w.shape, data: bytes });
  }
  await weights.close();
  await writeSafetensors(join(prequant, "model.safetensors"), tensors);
  const hf = JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  hf["quantization_config"] = { quant_method: "bitsandbytes", load_in_4bit: true, bnb_4bit_quant_type: "fp4", bnb_4bit_use_double_quant: false };
  await writeFile(join(prequant, "config.json"), JSON.stringify(hf));
  const prequantCfg = parseModelConfig(hf, "prequant");
  assert.deepEqual(await logitsOf(prequant, prequantCfg, {}), await logitsOf(dir, cfg, { quantize: { kind: "4bit", ...opts } }));
});

test("8-bit: LLM.int8 rowwise rounding of the linear weights", async () => {
  const { dir, cfg } = await writeTiny();
  const reference = join(dirname(dir), "int8");
  await rewrite(dir, cfg, reference, (name, bytes, shape) => dequantizeInt8Rowwise(quantizeInt8Rowwise(bytes, "F32", shape[0]!, shape[1]!, name)));
  assert.deepEqual(await logitsOf(dir, cfg, { quantize: { kind: "8bit" } }), await logitsOf(reference, cfg, {}));
});
