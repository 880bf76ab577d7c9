// The demo model's shape, and moving it between a Hugging Face folder and the CPU backend: open for full
// or LoRA training, and save the fully trained flat buffer back as model.safetensors with HF names.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createCpuBackend } from "../../src/backend/cpu/index.ts";
import { openWeights, writeShardedSafetensors } from "../../src/io/safetensors/checkpoint.ts";
import type { TensorToWrite } from "../../src/io/safetensors/writer.ts";
import { initLoraWeights } from "../../src/lora/init.ts";
import { makeLoraSettings, type LoraOptions } from "../../src/lora/settings.ts";
import { parseModelConfig, type ModelConfig } from "../../src/hf/config.ts";
import type { HfConfigJson } from "../../src/hf/presets.ts";
import { loadCausalLmParams } from "../../src/model/causal-lm/load.ts";
import { createCausalLm, type CausalLm } from "../../src/model/causal-lm/model.ts";
import { f32ToBf16Array } from "../../src/util/half.ts";
import { TunaError } from "../../src/util/errors.ts";
import { readJsonFile } from "../../src/util/json-file.ts";
import { createRng } from "../../src/util/random.ts";
import { SPECIAL_TOKENS } from "./tokenizer.ts";

export interface DemoShape {
  hiddenSize: number; // C
  intermediateSize: number; // F
  numLayers: number; // L
  numHeads: number; // H
  numKvHeads: number; // KV
}

/** config.json of the demo model: Llama, tied embeddings, vocab = tokenizer size rounded up to 8. */
export function demoConfigJson(tokenizerSize: number, shape: DemoShape): HfConfigJson {
  const id = (t: (typeof SPECIAL_TOKENS)[number]): number => SPECIAL_TOKENS.indexOf(t);
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_act: "silu",
    initializer_range: 0.02,
    attention_bias: false,
    mlp_bias: false,
    vocab_size: Math.ceil(tokenizerSize / 8) * 8,
    hidden_size: shape.hiddenSize,
    intermediate_size: shape.intermediateSize,
    num_hidden_layers: shape.numLayers,
    num_attention_heads: shape.numHeads,
    num_key_value_heads: shape.numKvHeads,
    max_position_embeddings: 256,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    rope_scaling: null,
    tie_word_embeddings: true,
    bos_token_id: id("<s>"),
    eos_token_id: id("<|im_end|>"),
    pad_token_id: id("<pad>"),
    torch_dtype: "float32",
  };
}

/** Loads a model folder on a single-threaded CPU backend (the demo's matrices are too small to split). */
export async function openDemoModel(
  dir: string,
  options: { mode: "full" } | { mode: "lora"; lora: LoraOptions; seed: number },
): Promise<{ model: CausalLm; cfg: ModelConfig }> {
  const backend = createCpuBackend({ threads: 1 });
  const weights = await openWeights(dir);
  try {
    const cfg = parseModelConfig(await readJsonFile(join(dir, "config.json"), "model config"), join(dir, "config.json"));
    const lora = options.mode === "lora" ? makeLoraSettings(options.lora, cfg) : undefined;
    const params = await loadCausalLmParams(backend, cfg, weights, { mode: options.mode, baseDtype: "f32", ...(lora === undefined ? {} : { lora }) });
    if (lora !== undefined && options.mode === "lora") {
      backend.upload(params.trainable.params, initLoraWeights(lora, cfg, createRng(options.seed)).flat);
    }
    return { model: createCausalLm(backend, params, { checkpointing: false, seed: 0 }), cfg };
  } finally {
    await weights.close();
  }
}

/**
 * Writes a fully trained model (mode "full": every weight is in the trainable buffer, by HF name) as
 * config.json, generation_config.json and model.safetensors. The tokenizer files are written separately.
 */
export async function saveModelFolder(model: CausalLm, dir: string, config: HfConfigJson, dtype: "F32" | "BF16"): Promise<void> {
  const trainable = model.params.trainable;
  if (model.params.dEmbed === null) throw new TunaError("INTERNAL", "saveModelFolder needs a model loaded for full training");
  const flat = await model.backend.downloadF32(trainable.params);
  const tensors: TensorToWrite[] = trainable.entries.map((e) => {
    const values = flat.subarray(e.offset, e.offset + e.size);
    const data = dtype === "F32" ? new Uint8Array(values.slice().buffer) : new Uint8Array(f32ToBf16Array(values).buffer);
    return { name: e.name, dtype, shape: e.shape, data };
  });
  const torchDtype = dtype === "F32" ? "float32" : "bfloat16";
  await writeFile(join(dir, "config.json"), JSON.stringify({ ...config, torch_dtype: torchDtype }, null, 2) + "\n");
  const generation = { _from_model_config: true, bos_token_id: config["bos_token_id"], eos_token_id: config["eos_token_id"], pad_token_id: config["pad_token_id"] };
  await writeFile(join(dir, "generation_config.json"), JSON.stringify(generation, null, 2) + "\n");
  await writeShardedSafetensors(dir, tensors);
}
