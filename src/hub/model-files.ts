// Which files of a model repo tuna needs (config, tokenizer, safetensors weights and the shards an index
// lists), and whether a cached snapshot holds them all. Weights are fetched last, so present weights imply
// the rest of the snapshot was fetched too.

import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { TunaError, errorMessage } from "../util/errors.ts";
import { isFile } from "../util/fs-checks.ts";

export const CONFIG_FILE = "config.json";
export const SAFETENSORS_FILE = "model.safetensors";
export const SAFETENSORS_INDEX = "model.safetensors.index.json";

/** Fetched when the repo has them; the tokenizer loader reports what is missing with its own advice. */
export const OPTIONAL_MODEL_FILES = [
  "generation_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "chat_template.jinja",
];

export interface ModelFilePlan {
  files: string[]; // in download order, the weights last
  index?: string; // when set, the shards it lists are fetched after it
}

/** Decide the downloads from the repo's file list; throws when the repo has no usable weights. */
export function planModelFiles(id: string, repoFiles: Set<string>): ModelFilePlan {
  if (!repoFiles.has(CONFIG_FILE)) {
    throw new TunaError(
      "MODEL_INVALID",
      `model repo "${id}" has no ${CONFIG_FILE}, so it is not a transformers model (files: ${sample(repoFiles)}).`,
    );
  }
  const files = [CONFIG_FILE, ...OPTIONAL_MODEL_FILES.filter((f) => repoFiles.has(f))];
  // Without tokenizer.json, fetch the sentencepiece model so the tokenizer loader can say how to convert it.
  if (!repoFiles.has("tokenizer.json") && repoFiles.has("tokenizer.model")) files.push("tokenizer.model");
  if (repoFiles.has(SAFETENSORS_FILE)) return { files: [...files, SAFETENSORS_FILE] };
  if (repoFiles.has(SAFETENSORS_INDEX)) return { files: [...files, SAFETENSORS_INDEX], index: SAFETENSORS_INDEX };
  const pytorch = [...repoFiles].filter((f) => f.endsWith(".bin") || f.endsWith(".pt") || f.endsWith(".pth"));
  if (pytorch.length > 0) {
    throw new TunaError(
      "UNSUPPORTED",
      `model repo "${id}" has only PyTorch weights (${pytorch.slice(0, 3).join(", ")}); tuna reads safetensors ` +
        `only. Convert it in Python: AutoModelForCausalLM.from_pretrained("${id}").save_pretrained("out", ` +
        `safe_serialization=True), then pass the folder "out"; or look for a safetensors revision on the hub.`,
    );
  }
  throw new TunaError(
    "MODEL_INVALID",
    `model repo "${id}" has no ${SAFETENSORS_FILE} or ${SAFETENSORS_INDEX} (files: ${sample(repoFiles)}).`,
  );
}

function sample(files: Set<string>): string {
  const names = [...files].sort();
  return names.length <= 12 ? names.join(", ") : `${names.slice(0, 12).join(", ")}, ... (${names.length} in all)`;
}

/** The distinct shard files a safetensors index maps its tensors to, in name order. */
export async function readShardNames(indexPath: string): Promise<string[]> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(indexPath, "utf8"));
  } catch (e) {
    throw new TunaError("FILE_FORMAT", `${indexPath} is not valid JSON: ${errorMessage(e)}`, { cause: e });
  }
  const weightMap = (parsed as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    throw new TunaError("FILE_FORMAT", `${indexPath} has no "weight_map" object (tensor name -> shard file).`);
  }
  const shards = new Set<string>();
  for (const [tensor, shard] of Object.entries(weightMap)) {
    if (typeof shard !== "string" || !shard.endsWith(".safetensors") || shard.includes("..")) {
      throw new TunaError(
        "FILE_FORMAT",
        `${indexPath}: weight_map["${tensor}"] is ${JSON.stringify(shard)}, expected a *.safetensors file name.`,
      );
    }
    shards.add(shard);
  }
  if (shards.size === 0) throw new TunaError("FILE_FORMAT", `${indexPath}: weight_map is empty.`);
  return [...shards].sort();
}

/** The first file a cached model snapshot lacks, or undefined when it can be used. */
export async function missingModelFile(folder: string, explicitFiles?: string[]): Promise<string | undefined> {
  if (explicitFiles !== undefined) {
    for (const file of explicitFiles) if (!(await isFile(join(folder, file)))) return file;
    return undefined;
  }
  if (!(await isFile(join(folder, CONFIG_FILE)))) return CONFIG_FILE;
  if (await isFile(join(folder, SAFETENSORS_FILE))) return undefined;
  if (!(await isFile(join(folder, SAFETENSORS_INDEX)))) return `${SAFETENSORS_FILE} or ${SAFETENSORS_INDEX}`;
  for (const shard of await readShardNames(join(folder, SAFETENSORS_INDEX))) {
    if (!(await isFile(join(folder, shard)))) return shard;
  }
  return undefined;
}
