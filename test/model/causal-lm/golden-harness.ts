// Loads a golden case (model + PEFT adapter + dumped inputs/outputs from transformers + peft) into the
// tuna model on the CPU backend, so tests can compare logits, loss and LoRA gradients by name.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { createCpuBackend } from "../../../src/backend/cpu/index.ts";
import { openWeights, type WeightSource } from "../../../src/io/safetensors/checkpoint.ts";
import { decodeToFloat32 } from "../../../src/io/safetensors/convert.ts";
import { parseModelConfig, type ModelConfig } from "../../../src/hf/config.ts";
import { loadCausalLmParams } from "../../../src/model/causal-lm/load.ts";
import { createCausalLm, type CausalLm } from "../../../src/model/causal-lm/model.ts";
import { readAdapter } from "../../../src/lora/adapter-files.ts";
import { loraKey, magnitudeKey } from "../../../src/lora/layout.ts";

export const GOLDEN = new URL("../../golden/", import.meta.url).pathname;

interface CaseManifest {
  model_dir: string;
  adapter_dir: string;
}

export async function goldenCases(): Promise<Record<string, CaseManifest>> {
  const m = JSON.parse(await readFile(join(GOLDEN, "manifest.json"), "utf8")) as { cases: Record<string, CaseManifest> };
  return m.cases;
}

export async function readDump(source: WeightSource, name: string): Promise<Float32Array> {
  return decodeToFloat32(await source.readTensor(name), source.info(name).dtype);
}

export async function readInts(source: WeightSource, name: string): Promise<{ values: number[]; shape: number[] }> {
  const info = source.info(name);
  return { values: Array.from(decodeToFloat32(await source.readTensor(name), info.dtype)), shape: info.shape };
}

export interface LoadedCase {
  cfg: ModelConfig;
  model: CausalLm;
  adapterKeys: string[];
}

/** The model with the case's adapter loaded into the trainable buffer; every adapter tensor placed. */
export async function loadGoldenCase(c: CaseManifest, checkpointing: boolean): Promise<LoadedCase> {
  const modelDir = join(GOLDEN, c.model_dir);
  const cfg = parseModelConfig(JSON.parse(await readFile(join(modelDir, "config.json"), "utf8")), c.model_dir);
  const adapterDir = join(GOLDEN, c.adapter_dir);
  // readAdapter resolves target_modules against the model and lays the tensors out flat.
  const adapter = await readAdapter(adapterDir, cfg);
  const adapterKeys = adapter.params.layout.modules.flatMap((m) => [loraKey(m.name, "A"), loraKey(m.name, "B"), ...(m.magnitudeOffset === null ? [] : [magnitudeKey(m.name)])]);
  const weights = await openWeights(modelDir);
  const backend = createCpuBackend();
  const params = await loadCausalLmParams(backend, cfg, weights, { mode: "lora", baseDtype: "f32", lora: adapter.settings });
  await weights.close();
  backend.upload(params.trainable.params, adapter.params.flat);
  return { cfg, model: createCausalLm(backend, params, { checkpointing, seed: 0 }), adapterKeys };
}

/** max |a - b| / max |b|: the relative error of a whole tensor. */
/**
 * The largest |actual - expected| / |expected| over elements that are not tiny (|expected| at least
 * `floor` times the largest |expected|): max|diff|/max|ref| alone lets small elements be wrong.
 */
export function elementwiseRelativeError(actual: ArrayLike<number>, expected: ArrayLike<number>, floor = 1e-2): number {
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) maxRef = Math.max(maxRef, Math.abs(expected[i]!));
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    const ref = Math.abs(expected[i]!);
    if (ref >= floor * maxRef && ref > 0) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!) / ref);
  }
  return worst;
}

export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(actual[i]! - expected[i]!));
    maxRef = Math.max(maxRef, Math.abs(expected[i]!));
  }
  return maxRef === 0 ? maxDiff : maxDiff / maxRef;
}
