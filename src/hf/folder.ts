// Opens a Hugging Face model folder: config.json (required), generation_config.json (optional) and
// the safetensors weights, checked against the config; or a .gguf file (src/hf/gguf-model.ts).
// The tokenizer is loaded separately.
import { stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { TunaError } from "../util/errors.ts";
import { readJsonFile } from "../util/json-file.ts";
import { openWeights, type WeightSource } from "../io/safetensors/checkpoint.ts";
import { parseModelConfig, type ModelConfig } from "./config.ts";
import { parseGenerationConfig, type GenerationConfig } from "./generation-config.ts";
import { checkWeights, type WeightCheck } from "./check-weights.ts";
import { pathExists } from "../util/fs-checks.ts";
import { isGgufPath, openGgufModel } from "./gguf-model.ts";

export interface ModelFolder {
  dir: string;
  config: ModelConfig;
  generationConfig: GenerationConfig | undefined;
  weights: WeightSource;
  weightCheck: WeightCheck;
}

/** Reads and validates config.json alone (no weights): what `inspect` of a config or a planner needs. */
export async function readModelConfig(dir: string): Promise<ModelConfig> {
  const configPath = join(dir, "config.json");
  if (!(await pathExists(configPath))) {
    if (await pathExists(join(dir, "adapter_config.json"))) {
      const adapter = await readJsonFile(join(dir, "adapter_config.json"), "adapter config");
      const base = typeof adapter === "object" && adapter !== null ? (adapter as Record<string, unknown>)["base_model_name_or_path"] : undefined;
      throw new TunaError(
        "MODEL_INVALID",
        `${dir} is a PEFT adapter, not a model${typeof base === "string" ? ` (its base model is ${base})` : ""}; give the base model and pass the adapter separately.`,
      );
    }
    throw new TunaError("MODEL_INVALID", `${dir} is not a model folder: it has no config.json. Point to a folder with config.json and *.safetensors, or a hub id.`);
  }
  return parseModelConfig(await readJsonFile(configPath, "model config"), configPath);
}

export async function openModelFolder(path: string): Promise<ModelFolder> {
  const dir = resolve(path);
  let isDir = false;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch (e) {
    throw new TunaError("FILE_NOT_FOUND", `model folder not found: ${dir}`, { cause: e });
  }
  if (!isDir && isGgufPath(dir)) {
    const gguf = await openGgufModel(dir);
    try {
      return { dir, config: gguf.config, generationConfig: undefined, weights: gguf.weights, weightCheck: checkWeights(gguf.config, gguf.weights) };
    } catch (e) {
      await gguf.weights.close();
      throw e;
    }
  }
  if (!isDir) throw new TunaError("MODEL_INVALID", `${dir} is a file; a model is a folder holding config.json and *.safetensors (or a .gguf file).`);
  const config = await readModelConfig(dir);
  const genPath = join(dir, "generation_config.json");
  const generationConfig = (await pathExists(genPath)) ? parseGenerationConfig(await readJsonFile(genPath, "generation config"), genPath) : undefined;
  const weights = await openWeights(dir);
  try {
    const weightCheck = checkWeights(config, weights);
    return { dir, config, generationConfig, weights, weightCheck };
  } catch (e) {
    await weights.close();
    throw e;
  }
}
