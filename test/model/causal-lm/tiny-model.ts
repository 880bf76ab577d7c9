// A tiny random model (small vocab so tests are fast) loaded on the CPU backend with random LoRA
// weights (B nonzero, so every gradient is), for gradient and checkpointing tests.
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCpuBackend } from "../../../src/backend/cpu/index.ts";
import { openWeights } from "../../../src/io/safetensors/checkpoint.ts";
import { parseModelConfig, type ModelConfig } from "../../../src/hf/config.ts";
import { writeRandomModel } from "../../../src/hf/random-init.ts";
import { loadCausalLmParams } from "../../../src/model/causal-lm/load.ts";
import { createCausalLm, type CausalLm } from "../../../src/model/causal-lm/model.ts";
import { makeLoraSettings, type LoraOptions } from "../../../src/lora/settings.ts";
import { createRng } from "../../../src/util/random.ts";
import type { HfConfigJson } from "../../../src/hf/presets.ts";

export const TINY: HfConfigJson = {
  model_type: "llama",
  vocab_size: 96,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: true,
  initializer_range: 0.3,
};

export async function writeTiny(config: HfConfigJson = TINY, seed = 1): Promise<{ dir: string; cfg: ModelConfig }> {
  const dir = join(await mkdtemp(join(tmpdir(), "tuna-tiny-")), "model");
  await writeRandomModel(dir, config, { seed, dtype: "F32" });
  return { dir, cfg: parseModelConfig(config, "tiny") };
}

export async function tinyModel(
  dir: string,
  cfg: ModelConfig,
  options: {
    mode: "lora" | "full";
    lora?: Partial<LoraOptions>;
    checkpointing?: boolean;
    seed?: number;
    activationDtype?: "f32" | "bf16";
    logitsChunkRows?: number;
  },
): Promise<CausalLm> {
  const backend = createCpuBackend();
  const weights = await openWeights(dir);
  const lora =
    options.mode === "lora"
      ? makeLoraSettings({ r: 4, alpha: 8, dropout: 0, targetModules: "all-linear", ...options.lora }, cfg)
      : undefined;
  const params = await loadCausalLmParams(backend, cfg, weights, { mode: options.mode, baseDtype: "f32", ...(lora === undefined ? {} : { lora }) });
  await weights.close();
  if (options.mode === "lora") {
    const rng = createRng(options.seed ?? 5);
    const values = new Float32Array(params.trainable.total);
    for (let i = 0; i < values.length; i++) values[i] = 0.2 * rng.normal();
    backend.upload(params.trainable.params, values);
  }
  return createCausalLm(backend, params, {
    checkpointing: options.checkpointing ?? false,
    seed: 11,
    ...(options.activationDtype === undefined ? {} : { activationDtype: options.activationDtype }),
    ...(options.logitsChunkRows === undefined ? {} : { logitsChunkRows: options.logitsChunkRows }),
  });
}

/** A batch of two packed documents and one padded-style row, ids in [3, V). */
export function sampleDocs(V: number, seed = 3): { inputIds: number[]; labels: number[] }[] {
  const rng = createRng(seed);
  const doc = (n: number): { inputIds: number[]; labels: number[] } => {
    const ids = Array.from({ length: n }, () => 3 + Math.floor(rng.uniform() * (V - 3)));
    return { inputIds: ids, labels: ids.map((t, i) => (i > 0 && i < 3 ? -100 : t)) };
  };
  return [doc(7), doc(5), doc(9)];
}
