// An adapter folder as PEFT saves it: adapter_config.json + adapter_model.safetensors. Writing is
// atomic (a staged folder renamed into place); reading checks every tensor against the model.
import { mkdir, mkdtemp, readFile, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { TunaError } from "../util/errors.ts";
import type { ModelConfig } from "../hf/config.ts";
import { decodeToFloat32, encodeFromFloat32 } from "../io/safetensors/convert.ts";
import type { SafetensorsDtype } from "../io/safetensors/dtypes.ts";
import { fsError } from "../io/safetensors/fs-errors.ts";
import { openWeightsFile, type WeightSource } from "../io/safetensors/checkpoint.ts";
import { writeBytesAtomically, writeSafetensors, type TensorToWrite } from "../io/safetensors/writer.ts";
import { ADAPTER_CONFIG_FILE, serializeAdapterConfig, settingsFromAdapterConfig } from "./adapter-config.ts";
import { allocateLoraParams, type LoraParams } from "./init.ts";
import { embeddingKey, loraKey, loraLayout, magnitudeKey, tokenRowsKey } from "./layout.ts";
import { embeddingModuleOf, type EmbeddingModule, type LoraSettings } from "./settings.ts";
import { describeLinearModules, modelModuleNames } from "./targets.ts";

export const ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors";

export type AdapterDtype = "float32" | "bfloat16" | "float16";
const DTYPES: Record<AdapterDtype, SafetensorsDtype> = { float32: "F32", bfloat16: "BF16", float16: "F16" };

/** Whole embedding matrices saved with the adapter: PEFT does so when the vocabulary was resized, or for modules_to_save. */
export interface SavedEmbeddings {
  /** Rows of the saved matrices: the vocabulary after resizing (V'). */
  vocabSize: number;
  embedTokens: Float32Array | null; // (V', C)
  lmHead: Float32Array | null; // (V', C)
}

export interface LoraAdapter {
  settings: LoraSettings;
  params: LoraParams;
  embeddings: SavedEmbeddings | null;
}

/**
 * Writes `dir`/adapter_config.json and adapter_model.safetensors (keys without the adapter name,
 * metadata {"format":"pt"}, tensors in `dtype`). A new folder is staged beside `dir` and renamed
 * into place; an existing folder (a checkpoint with other files) gets both files staged inside it,
 * the old config removed first, so a crash leaves either the old pair, or no config at all.
 */
export async function writeAdapter(dir: string, adapter: LoraAdapter, options: { dtype?: AdapterDtype } = {}): Promise<void> {
  const dtype = DTYPES[options.dtype ?? "float32"];
  const { params, embeddings } = adapter;
  const tensors: TensorToWrite[] = [];
  const add = (name: string, shape: [number, number] | [number], data: Float32Array): void => {
    const size = shape.reduce((a, b) => a * b, 1);
    if (data.length !== size) {
      throw new TunaError("INTERNAL", `adapter tensor ${name} has ${data.length} values, its shape [${shape.join(", ")}] needs ${size}`);
    }
    tensors.push({ name, dtype, shape, data: encodeFromFloat32(data, dtype) });
  };
  for (const m of params.layout.modules) {
    const t = params.byModule.get(m.name);
    if (t === undefined) throw new TunaError("INTERNAL", `the adapter has no tensors for ${m.name}`);
    add(loraKey(m.name, "A"), m.aShape, t.a);
    add(loraKey(m.name, "B"), m.bShape, t.b);
    if (m.magnitudeOffset !== null) {
      if (t.magnitude === null) throw new TunaError("INTERNAL", `the adapter has no DoRA magnitude for ${m.name}`);
      add(magnitudeKey(m.name), [m.outFeatures], t.magnitude);
    }
  }
  for (const t of params.layout.tokens) {
    const rows = params.tokenRows.get(t.module);
    if (rows === undefined) throw new TunaError("INTERNAL", `the adapter has no trainable token rows for ${t.module}`);
    add(tokenRowsKey(t.module), t.shape, rows);
  }
  if (embeddings !== null) {
    for (const [module, data] of [["embed_tokens", embeddings.embedTokens], ["lm_head", embeddings.lmHead]] as const) {
      if (data !== null) add(embeddingKey(module), [embeddings.vocabSize, data.length / embeddings.vocabSize], data);
    }
  }
  await writeAdapterFolder(resolve(dir), serializeAdapterConfig(adapter.settings), tensors);
}

async function writeAdapterFolder(target: string, configText: string, tensors: readonly TensorToWrite[]): Promise<void> {
  const configBytes = new TextEncoder().encode(configText);
  const writeBoth = async (folder: string): Promise<void> => {
    await writeSafetensors(join(folder, ADAPTER_WEIGHTS_FILE), tensors, { format: "pt" });
    await writeBytesAtomically(join(folder, ADAPTER_CONFIG_FILE), configBytes);
  };
  let kind: "none" | "dir" | "other";
  try {
    kind = (await stat(target)).isDirectory() ? "dir" : "other";
  } catch {
    kind = "none";
  }
  if (kind === "other") throw new TunaError("CONFIG_INVALID", `${target} exists and is not a folder; choose a folder path for the adapter.`);
  const parent = kind === "none" ? dirname(target) : target;
  try {
    await mkdir(parent, { recursive: true });
  } catch (e) {
    throw fsError(parent, "create the folder", e);
  }
  let staging: string;
  try {
    staging = await mkdtemp(join(parent, kind === "none" ? `.${basename(target)}.tmp-` : ".adapter.tmp-"));
  } catch (e) {
    throw fsError(parent, "create a staging folder in", e);
  }
  try {
    await writeBoth(staging);
    if (kind === "none") {
      await renameOrFail(staging, target);
      return;
    }
    await rm(join(target, ADAPTER_CONFIG_FILE), { force: true });
    await renameOrFail(join(staging, ADAPTER_WEIGHTS_FILE), join(target, ADAPTER_WEIGHTS_FILE));
    await renameOrFail(join(staging, ADAPTER_CONFIG_FILE), join(target, ADAPTER_CONFIG_FILE));
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

async function renameOrFail(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (e) {
    throw fsError(to, "move the finished adapter into place at", e);
  }
}

type KeyKind =
  | { kind: "lora"; module: string; which: "A" | "B" }
  | { kind: "magnitude"; module: string }
  | { kind: "tokens"; module: EmbeddingModule }
  | { kind: "embedding"; module: EmbeddingModule }
  | { kind: "ignored" }
  | { kind: "unknown"; why: string };

const LORA_KEY = /^base_model\.model\.(.+?)\.lora_(A|B)(?:\.[^.]+)?\.weight$/;
// PEFT saves `<module>.lora_magnitude_vector`; older files keep the adapter name and the DoraLinearLayer's ".weight".
const MAGNITUDE_KEY = /^base_model\.model\.(.+?)\.lora_magnitude_vector(?:\.(?!weight$)[^.]+)?(?:\.weight)?$/;
const TOKENS_KEY = /^base_model\.model\.(.+)\.token_adapter\.trainable_tokens_(delta|original)(?:\.[^.]+)?$/;
const EMBEDDING_KEY = /^base_model\.model\.(model\.embed_tokens|lm_head)(?:\.token_adapter\.base_layer)?\.weight$/;

/** What a saved key holds; keys with an adapter name (`lora_A.default.weight`) are accepted too. */
function classifyKey(key: string): KeyKind {
  const lora = LORA_KEY.exec(key);
  if (lora?.[1] !== undefined) return { kind: "lora", module: lora[1], which: lora[2] === "A" ? "A" : "B" };
  const magnitude = MAGNITUDE_KEY.exec(key);
  if (magnitude?.[1] !== undefined) return { kind: "magnitude", module: magnitude[1] };
  const tokens = TOKENS_KEY.exec(key);
  if (tokens?.[1] !== undefined) {
    const module = embeddingModuleOf(tokens[1]);
    if (module === undefined) return { kind: "unknown", why: `trainable token rows of "${tokens[1]}", which is not an embedding of this model` };
    return tokens[2] === "original" ? { kind: "ignored" } : { kind: "tokens", module };
  }
  const embedding = EMBEDDING_KEY.exec(key);
  if (embedding?.[1] !== undefined) return { kind: "embedding", module: embedding[1] === "lm_head" ? "lm_head" : "embed_tokens" };
  if (!key.startsWith("base_model.model.")) return { kind: "unknown", why: "PEFT LoRA keys start with base_model.model." };
  if (/\.lora_embedding_[AB]\b|\.lora_B\.bias$/.test(key)) return { kind: "unknown", why: "embedding LoRA and lora_bias are not supported" };
  return { kind: "unknown", why: "it is not a lora_A / lora_B weight, trainable token rows or an embedding matrix" };
}

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

async function readFloatTensor(source: WeightSource, name: string, where: string): Promise<Float32Array> {
  const info = source.info(name);
  if (info.dtype !== "F32" && info.dtype !== "BF16" && info.dtype !== "F16") {
    throw new TunaError("MODEL_INVALID", `${where}: tensor ${name} is ${info.dtype}; adapter weights must be F32, BF16 or F16.`);
  }
  return decodeToFloat32(await source.readTensor(name), info.dtype);
}

/**
 * Reads an adapter folder PEFT wrote (any target_modules form, keys with or without the adapter
 * name, rank/alpha patterns, trainable token rows, saved embeddings) and checks every tensor's
 * shape against `cfg`: MODEL_INVALID names the tensor and the module when they do not fit.
 */
export async function readAdapter(dir: string, cfg: ModelConfig): Promise<LoraAdapter> {
  const root = resolve(dir);
  const configPath = join(root, ADAPTER_CONFIG_FILE);
  const weightsPath = join(root, ADAPTER_WEIGHTS_FILE);
  let text: string;
  try {
    text = await readFile(configPath, "utf8");
  } catch (e) {
    throw fsError(configPath, "read the adapter config", e);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new TunaError("FILE_FORMAT", `${configPath} is not valid JSON (${(e as Error).message}); save the adapter again.`);
  }
  let source: WeightSource;
  try {
    source = await openWeightsFile(weightsPath);
  } catch (e) {
    const bin = await stat(join(root, "adapter_model.bin")).then(() => true, () => false);
    if (bin) throw new TunaError("UNSUPPORTED", `${root} holds adapter_model.bin, a pickle; tuna reads only ${ADAPTER_WEIGHTS_FILE}. Save it with safe_serialization=True.`, { cause: e });
    throw e;
  }
  try {
    return await readAdapterTensors(source, json, cfg, configPath, weightsPath);
  } finally {
    await source.close();
  }
}

async function readAdapterTensors(source: WeightSource, json: unknown, cfg: ModelConfig, configPath: string, weightsPath: string): Promise<LoraAdapter> {
  const C = cfg.hiddenSize;
  const kinds = new Map(source.names().map((n) => [n, classifyKey(n)]));
  for (const [name, k] of kinds) {
    if (k.kind === "unknown") throw new TunaError("MODEL_INVALID", `${weightsPath}: unexpected tensor ${name}: ${k.why}.`);
  }
  // Saved embeddings first: their row count is the vocabulary the token ids refer to.
  const embeddingNames = new Map<EmbeddingModule, string>();
  let vocabSize: number | undefined;
  for (const [name, k] of kinds) {
    if (k.kind !== "embedding") continue;
    const shape = source.info(name).shape;
    if (embeddingNames.has(k.module)) throw new TunaError("MODEL_INVALID", `${weightsPath} holds the ${k.module} matrix twice (${embeddingNames.get(k.module) ?? ""} and ${name}).`);
    if (shape.length !== 2 || shape[1] !== C || (vocabSize !== undefined && shape[0] !== vocabSize)) {
      throw new TunaError("MODEL_INVALID", `${weightsPath}: tensor ${name} has shape ${shapeText(shape)}; module ${k.module} needs [vocab, ${C}] with the same vocab for both embeddings.`);
    }
    vocabSize = shape[0];
    embeddingNames.set(k.module, name);
  }
  const settings = settingsFromAdapterConfig(json, cfg, configPath, Math.max(vocabSize ?? 0, cfg.vocabSize));
  const params = allocateLoraParams(loraLayout(settings, cfg));
  const layoutOf = new Map(params.layout.modules.map((m) => [m.name, m]));
  const modelModules = modelModuleNames(cfg);
  const seen = new Map<string, string>();
  const claim = (slot: string, name: string): void => {
    const other = seen.get(slot);
    if (other !== undefined) throw new TunaError("MODEL_INVALID", `${weightsPath} holds ${slot} twice: as ${other} and as ${name}.`);
    seen.set(slot, name);
  };

  for (const [name, k] of kinds) {
    if (k.kind === "lora") {
      const m = layoutOf.get(k.module);
      if (m === undefined) {
        const why = modelModules.has(k.module)
          ? `${ADAPTER_CONFIG_FILE}'s target_modules does not select it`
          : `the model has no such module (${describeLinearModules(cfg)})`;
        throw new TunaError("MODEL_INVALID", `${weightsPath}: tensor ${name} is for module ${k.module}, but ${why}.`);
      }
      const expected = k.which === "A" ? m.aShape : m.bShape;
      const shape = source.info(name).shape;
      if (shape.length !== 2 || shape[0] !== expected[0] || shape[1] !== expected[1]) {
        throw new TunaError(
          "MODEL_INVALID",
          `${weightsPath}: tensor ${name} has shape ${shapeText(shape)}, but module ${k.module} (in_features ${m.inFeatures}, ` +
            `out_features ${m.outFeatures}) with rank ${m.r} (${ADAPTER_CONFIG_FILE}: r / rank_pattern) needs lora_${k.which} ${shapeText(expected)}.`,
        );
      }
      claim(`${k.module}.lora_${k.which}`, name);
      const view = params.byModule.get(k.module);
      view?.[k.which === "A" ? "a" : "b"].set(await readFloatTensor(source, name, weightsPath));
    } else if (k.kind === "magnitude") {
      const m = layoutOf.get(k.module);
      if (m === undefined || m.magnitudeOffset === null) {
        const why = m === undefined ? `${ADAPTER_CONFIG_FILE}'s target_modules does not select that module` : `${ADAPTER_CONFIG_FILE} has no "use_dora": true`;
        throw new TunaError("MODEL_INVALID", `${weightsPath}: tensor ${name} is DoRA's magnitude of ${k.module}, but ${why}.`);
      }
      const shape = source.info(name).shape;
      if (shape.length !== 1 || shape[0] !== m.outFeatures) {
        throw new TunaError("MODEL_INVALID", `${weightsPath}: tensor ${name} has shape ${shapeText(shape)}; DoRA's magnitude of ${k.module} needs [${m.outFeatures}] (its out_features).`);
      }
      claim(`${k.module}.lora_magnitude_vector`, name);
      params.byModule.get(k.module)?.magnitude?.set(await readFloatTensor(source, name, weightsPath));
    } else if (k.kind === "tokens") {
      const t = params.layout.tokens.find((x) => x.module === k.module);
      if (t === undefined) {
        throw new TunaError("MODEL_INVALID", `${weightsPath}: tensor ${name} holds trainable rows of ${k.module}, but ${ADAPTER_CONFIG_FILE}'s trainable_token_indices lists none for it.`);
      }
      const shape = source.info(name).shape;
      if (shape.length !== 2 || shape[0] !== t.shape[0] || shape[1] !== t.shape[1]) {
        throw new TunaError("MODEL_INVALID", `${weightsPath}: tensor ${name} has shape ${shapeText(shape)}; ${t.indices.length} trainable token rows of ${k.module} need ${shapeText(t.shape)}.`);
      }
      claim(`${k.module} token rows`, name);
      params.tokenRows.get(k.module)?.set(await readFloatTensor(source, name, weightsPath));
    }
  }
  const missing: string[] = [];
  for (const m of params.layout.modules) {
    for (const w of ["A", "B"] as const) if (!seen.has(`${m.name}.lora_${w}`)) missing.push(loraKey(m.name, w));
    if (m.magnitudeOffset !== null && !seen.has(`${m.name}.lora_magnitude_vector`)) missing.push(magnitudeKey(m.name));
  }
  for (const t of params.layout.tokens) if (!seen.has(`${t.module} token rows`)) missing.push(tokenRowsKey(t.module));
  if (missing.length > 0) {
    throw new TunaError(
      "MODEL_INVALID",
      `${weightsPath} lacks ${missing.length} tensor(s) that ${ADAPTER_CONFIG_FILE} calls for: ${missing.slice(0, 4).join(", ")}${missing.length > 4 ? ", ..." : ""}.`,
    );
  }
  let embeddings: SavedEmbeddings | null = null;
  if (vocabSize !== undefined) {
    const read = async (m: EmbeddingModule): Promise<Float32Array | null> => {
      const name = embeddingNames.get(m);
      return name === undefined ? null : readFloatTensor(source, name, weightsPath);
    };
    embeddings = { vocabSize, embedTokens: await read("embed_tokens"), lmHead: await read("lm_head") };
  }
  return { settings, params, embeddings };
}
