// Saving what training produced: the PEFT adapter (with the whole resized embeddings when the
// vocabulary grew, as PEFT saves them) or, for full fine-tuning, an HF model folder; plus the tokenizer.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { TrainConfig } from "../config/index.ts";
import { encodeFromFloat32 } from "../io/safetensors/convert.ts";
import { writeShardedSafetensors } from "../io/safetensors/checkpoint.ts";
import { writeAdapter } from "../lora/adapter-files.ts";
import { allocateLoraParams } from "../lora/init.ts";
import { loraLayout } from "../lora/layout.ts";
import { readJsonFile } from "../util/json-file.ts";
import type { CausalLm } from "../model/causal-lm/model.ts";
import type { LoadedTokenizer } from "../tokenizer/load.ts";
import { saveTokenizer } from "../tokenizer/save.ts";
import type { TrainModel } from "./model-setup.ts";

export interface SaveInputs {
  model: CausalLm;
  setup: TrainModel;
  /** The base model folder (its config.json and tokenizer files are the starting point). */
  modelDir: string;
  tokenizer: LoadedTokenizer;
  config: TrainConfig;
}

export async function saveModelFiles(dir: string, s: SaveInputs): Promise<void> {
  const be = s.model.backend;
  const trainable = s.model.params.trainable;
  const flat = (await be.downloadF32(trainable.params)).subarray(0, trainable.total);
  if (s.setup.lora !== null) {
    const params = allocateLoraParams(loraLayout(s.setup.lora, s.setup.cfg));
    params.flat.set(flat);
    await writeAdapter(dir, { settings: s.setup.lora, params, embeddings: s.setup.embeddings }, { dtype: "float32" });
  } else {
    // Full fine-tuning: an HF model folder in the base checkpoint's dtype (bf16 unless it was f32).
    const hf = (await readJsonFile(join(s.modelDir, "config.json"), "model config")) as Record<string, unknown>;
    const stored = hf["torch_dtype"] ?? hf["dtype"];
    const dtype: "F32" | "BF16" = stored === "float32" ? "F32" : "BF16";
    const tensors = trainable.entries.map((e) => ({
      name: e.name,
      dtype,
      shape: e.shape,
      data: encodeFromFloat32(flat.subarray(e.offset, e.offset + e.size), dtype),
    }));
    await writeShardedSafetensors(dir, tensors);
    await writeFile(join(dir, "config.json"), JSON.stringify({ ...hf, vocab_size: s.setup.cfg.vocabSize }, null, 2) + "\n");
    const generation = join(s.modelDir, "generation_config.json");
    await readJsonFile(generation, "generation config").then(
      (g) => writeFile(join(dir, "generation_config.json"), JSON.stringify(g, null, 2) + "\n"),
      () => undefined,
    );
  }
  await saveTokenizer(s.modelDir, dir, s.tokenizer, s.setup.cfg.modelType);
}
