// Merging a PEFT LoRA adapter into its base model as a Hugging Face folder, one tensor at a time
// (merged-weights.ts computes each), written beside OUT and moved into place.
import { copyFile, mkdir, mkdtemp, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join, relative, resolve } from "node:path";
import { TunaError } from "../util/errors.ts";
import { isInside } from "../util/paths.ts";
import { readJsonFile } from "../util/json-file.ts";
import { encodeFromFloat32 } from "../io/safetensors/convert.ts";
import type { SafetensorsDtype } from "../io/safetensors/dtypes.ts";
import { fsError } from "../io/safetensors/fs-errors.ts";
import { writeShardedSafetensorsStreaming } from "../io/safetensors/checkpoint.ts";
import type { TensorSpec } from "../io/safetensors/writer.ts";
import { readAdapter } from "./adapter-files.ts";
import { mergedWeight, planMerge } from "./merged-weights.ts";
import { adapterBaseWarning } from "./base-model-match.ts";
import { openModelFolder, type ModelFolder } from "../hf/folder.ts";
import { pathExists } from "../util/fs-checks.ts";

export type MergeDtype = "bfloat16" | "float16" | "float32";
export const MERGE_DTYPES: readonly MergeDtype[] = ["bfloat16", "float16", "float32"];
const STORAGE: Record<MergeDtype, SafetensorsDtype> = { bfloat16: "BF16", float16: "F16", float32: "F32" };

/** Tokenizer files copied verbatim into the merged folder, those the source folder has. */
export const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "chat_template.jinja",
  "tokenizer.model",
  "added_tokens.json",
];

export interface MergeOptions {
  adapterDir: string;
  outputDir: string;
  /** Default: the base's torch_dtype (else its embedding's storage), bfloat16 for a quantized base. */
  dtype?: MergeDtype;
  /** transformers' max_shard_size in bytes (default 5 * 10**9). */
  maxShardBytes?: number;
  /** Replace an existing non-empty output folder. */
  overwrite?: boolean;
  /** Told after each tensor is written. */
  onTensor?: (progress: { name: string; index: number; total: number }) => void;
}

export interface MergeResult {
  outputDir: string;
  dtype: MergeDtype;
  /** V of the merged model (the adapter's when it saved resized embeddings). */
  vocabSize: number;
  /** Linear weights that got W + scale * B @ A. */
  mergedModules: number;
  /** Embedding rows replaced by trainable token rows. */
  tokenRows: number;
  /** Which bitsandbytes format the base was dequantized from, if any. */
  dequantized: "4bit" | "8bit" | null;
  /** Basenames of the weight files written (one file, or shards + index). */
  weightFiles: string[];
  /** The folder the tokenizer files came from, or null when neither folder had any. */
  tokenizerFrom: string | null;
  /** Base tensors that no Llama-family module uses (not written, as transformers would drop them). */
  droppedTensors: string[];
  /** Set when the adapter's base_model_name_or_path names another model. */
  baseMismatch: string | null;
}

/** The folder must not be OUT or inside it: replacing OUT would delete it. */
function checkOutputPath(out: string, sources: { path: string; what: string }[]): void {
  for (const s of sources) {
    if (isInside(out, s.path)) {
      throw new TunaError("CONFIG_INVALID", `the output folder ${out} ${relative(out, s.path) === "" ? "is" : "contains"} the ${s.what} ${s.path}; choose an output folder elsewhere.`);
    }
  }
}

/** OUT may be absent or an empty folder; a non-empty folder only with overwrite; a file never. */
async function checkOutputFree(out: string, overwrite: boolean): Promise<"absent" | "empty" | "full"> {
  let isDir: boolean;
  try {
    isDir = (await stat(out)).isDirectory();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return "absent";
    throw fsError(out, "check the output folder", e);
  }
  if (!isDir) throw new TunaError("CONFIG_INVALID", `the output path ${out} is a file; give a folder path for the merged model.`);
  const entries = await readdir(out).catch((e: unknown) => {
    throw fsError(out, "list the output folder", e);
  });
  if (entries.length === 0) return "empty";
  if (!overwrite) {
    throw new TunaError("CONFIG_INVALID", `the output folder ${out} exists and is not empty (${entries.length} entries); pass --overwrite to replace it, or choose another folder.`);
  }
  return "full";
}

function defaultDtype(folder: ModelFolder): MergeDtype {
  if (folder.config.quantization !== null) return "bfloat16";
  const t = folder.config.torchDtype;
  if (t === "float32" || t === "bfloat16" || t === "float16") return t;
  const stored = folder.weights.info("model.embed_tokens.weight").dtype;
  return stored === "F32" ? "float32" : stored === "F16" ? "float16" : "bfloat16";
}

/** config.json of the merged model: the base's, without quantization_config, in `dtype`, with the merged vocabulary. */
async function mergedConfigText(folder: ModelFolder, dtype: MergeDtype, vocabSize: number): Promise<string> {
  const path = join(folder.dir, "config.json");
  const raw = await readJsonFile(path, "model config");
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new TunaError("MODEL_INVALID", `${path}: expected a JSON object.`);
  const json: Record<string, unknown> = { ...(raw as Record<string, unknown>) };
  delete json["quantization_config"];
  // transformers v5 writes "dtype", older versions "torch_dtype"; set whichever the base has.
  if ("dtype" in json) json["dtype"] = dtype;
  if ("torch_dtype" in json || !("dtype" in json)) json["torch_dtype"] = dtype;
  json["vocab_size"] = vocabSize;
  return `${JSON.stringify(json, null, 2)}\n`;
}

/** Copies the tokenizer files of the adapter folder (a run with added tokens saves its tokenizer there), else of the base. */
async function copyTokenizer(adapterDir: string, baseDir: string, target: string): Promise<string | null> {
  const from = (await pathExists(join(adapterDir, "tokenizer.json"))) || (await pathExists(join(adapterDir, "tokenizer.model"))) ? adapterDir : baseDir;
  let copied = 0;
  for (const name of TOKENIZER_FILES) {
    const src = join(from, name);
    if (!(await pathExists(src))) continue;
    await copyFile(src, join(target, name)).catch((e: unknown) => {
      throw fsError(src, "copy the tokenizer file", e);
    });
    copied++;
  }
  return copied > 0 ? from : null;
}

/** Moves the finished staging folder to `out`, the previous `out` (checked by checkOutputFree) set aside and removed after. */
async function publish(staging: string, out: string, overwrite: boolean): Promise<void> {
  const state = await checkOutputFree(out, overwrite);
  if (state === "absent") {
    await rename(staging, out).catch((e: unknown) => {
      throw fsError(out, "move the merged model into place at", e);
    });
    return;
  }
  const aside = `${staging}.old`;
  await rename(out, aside).catch((e: unknown) => {
    throw fsError(out, "move the previous output folder aside", e);
  });
  try {
    await rename(staging, out);
  } catch (e) {
    await rename(aside, out).catch(() => undefined);
    throw fsError(out, "move the merged model into place at", e);
  }
  await rm(aside, { recursive: true, force: true });
}

/**
 * Writes `baseDir` with the adapter of `options.adapterDir` merged in as a Hugging Face model folder
 * (config.json, generation_config.json, model.safetensors or shards + index, tokenizer files). One
 * weight is in memory at a time besides the adapter. The folder is written beside OUT and renamed
 * into place, so OUT never holds a half-written model.
 */
export async function mergeAdapter(baseDir: string, options: MergeOptions): Promise<MergeResult> {
  const out = resolve(options.outputDir);
  const adapterDir = resolve(options.adapterDir);
  const overwrite = options.overwrite === true;
  checkOutputPath(out, [
    { path: resolve(baseDir), what: "base model" },
    { path: adapterDir, what: "adapter" },
  ]);
  await checkOutputFree(out, overwrite);
  if (!(await stat(adapterDir).then((s) => s.isDirectory(), () => false))) {
    throw new TunaError("FILE_NOT_FOUND", `adapter folder not found: ${adapterDir}; give the folder holding adapter_config.json and adapter_model.safetensors.`);
  }
  const folder = await openModelFolder(baseDir);
  try {
    const adapter = await readAdapter(adapterDir, folder.config);
    const mismatch = adapterBaseWarning(adapter.settings.baseModelNameOrPath, baseDir, folder.dir, adapterDir);
    const plan = planMerge(folder, adapter, adapterDir);
    const dtype = options.dtype ?? defaultDtype(folder);
    const storage = STORAGE[dtype];
    const specs: TensorSpec[] = plan.weights.map((w) => ({ name: w.name, dtype: storage, shape: w.shape }));
    const byName = new Map(plan.weights.map((w) => [w.name, w]));
    const parent = dirname(out);
    await mkdir(parent, { recursive: true }).catch((e: unknown) => {
      throw fsError(parent, "create the folder", e);
    });
    const staging = await mkdtemp(join(parent, `.${basename(out)}.tmp-`)).catch((e: unknown) => {
      throw fsError(parent, "create a staging folder in", e);
    });
    try {
      let index = 0;
      const written = await writeShardedSafetensorsStreaming(
        staging,
        specs,
        async (spec) => {
          const w = byName.get(spec.name);
          if (w === undefined) throw new TunaError("INTERNAL", `no merge plan for ${spec.name}`);
          const bytes = encodeFromFloat32(await mergedWeight(folder, plan, w), storage);
          options.onTensor?.({ name: spec.name, index, total: specs.length });
          index++;
          return bytes;
        },
        options.maxShardBytes === undefined ? {} : { maxShardBytes: options.maxShardBytes },
      );
      const writeText = async (name: string, text: string): Promise<void> => {
        await writeFile(join(staging, name), text).catch((e: unknown) => {
          throw fsError(join(staging, name), "write", e);
        });
      };
      await writeText("config.json", await mergedConfigText(folder, dtype, plan.cfg.vocabSize));
      const generation = join(folder.dir, "generation_config.json");
      if (await pathExists(generation)) {
        await copyFile(generation, join(staging, "generation_config.json")).catch((e: unknown) => {
          throw fsError(generation, "copy", e);
        });
      }
      const tokenizerFrom = await copyTokenizer(adapterDir, folder.dir, staging);
      await publish(staging, out, overwrite);
      const expected = new Set(plan.weights.map((w) => w.name));
      return {
        outputDir: out,
        dtype,
        vocabSize: plan.cfg.vocabSize,
        mergedModules: plan.lora.size,
        tokenRows: [...plan.tokenRows.values()].reduce((n, t) => n + t.indices.length, 0),
        dequantized: folder.config.quantization === null ? null : folder.config.quantization.loadIn4bit ? "4bit" : "8bit",
        weightFiles: written.map((p) => basename(p)),
        tokenizerFrom,
        droppedTensors: folder.weightCheck.unexpected.filter((n) => !expected.has(n)),
        baseMismatch: mismatch ?? null,
      };
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  } finally {
    await folder.weights.close();
  }
}
