// Opens a model for use (evaluation, generation): resolves a folder or hub id, reads the config and
// an optional PEFT adapter, and loads everything onto a backend with the adapter's values in place.
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Backend } from "../backend/types.ts";
import { resolveModelPath } from "../hub/resolve.ts";
import { readAdapter, type LoraAdapter } from "../lora/adapter-files.ts";
import { adapterBaseWarning } from "../lora/base-model-match.ts";
import { openModelFolder } from "../hf/folder.ts";
import type { ModelConfig } from "../hf/config.ts";
import { loadCausalLmParams, type LoadOptions } from "../model/causal-lm/load.ts";
import type { CausalLmParams } from "../model/causal-lm/params.ts";

export interface OpenedModel {
  dir: string;
  cfg: ModelConfig;
  params: CausalLmParams;
  adapter: LoraAdapter | null;
}

export async function openModelForUse(
  backend: Backend,
  modelPath: string,
  options: {
    adapterDir?: string;
    baseDtype: "f32" | "bf16";
    revision?: string;
    quantize?: LoadOptions["quantize"];
    /** Told about an adapter whose base_model_name_or_path names another model. */
    onNotice?: (message: string) => void;
  },
): Promise<OpenedModel> {
  const dir = await resolveModelPath(modelPath, options.revision === undefined ? {} : { revision: options.revision });
  const folder = await openModelFolder(dir);
  try {
    let cfg = folder.config;
    let adapter: LoraAdapter | null = null;
    if (options.adapterDir !== undefined) {
      adapter = await readAdapter(options.adapterDir, cfg);
      const warning = adapterBaseWarning(adapter.settings.baseModelNameOrPath, modelPath, folder.dir, options.adapterDir);
      if (warning !== undefined) options.onNotice?.(`warning: ${warning}`);
      // An adapter saved after resizing the vocabulary carries the whole new embedding matrices.
      if (adapter.embeddings !== null) cfg = { ...cfg, vocabSize: adapter.embeddings.vocabSize };
    }
    const params = await loadCausalLmParams(backend, cfg, folder.weights, {
      mode: "lora",
      baseDtype: options.baseDtype,
      quantize: options.quantize ?? null,
      ...(adapter === null ? {} : { lora: adapter.settings, embeddings: adapter.embeddings }),
    });
    if (adapter !== null) backend.upload(params.trainable.params, adapter.params.flat);
    return { dir: folder.dir, cfg, params, adapter };
  } finally {
    await folder.weights.close();
  }
}

/** Where a model's tokenizer comes from: an adapter trained with added tokens ships the tokenizer that knows them. */
export function tokenizerDirFor(modelDir: string, adapterDir: string | undefined): string {
  return adapterDir !== undefined && existsSync(join(adapterDir, "tokenizer.json")) ? adapterDir : modelDir;
}
