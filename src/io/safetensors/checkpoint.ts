// A model folder's weights as one name -> tensor source: model.safetensors, or a sharded
// model.safetensors.index.json, or one explicit file; and the sharded writer that produces them.
import { readFile, readdir, rm, stat, mkdir } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { TunaError } from "../../util/errors.ts";
import { isInside } from "../../util/paths.ts";
import { findDuplicateJsonKey } from "./json-keys.ts";
import { describeNonFinite, firstNonFinite } from "./finite.ts";
import { fsError } from "./fs-errors.ts";
import { dtypeBits } from "./dtypes.ts";
import { openSafetensors, type SafetensorsFile, type TensorInfo } from "./reader.ts";
import {
  checkTensorData,
  planSafetensorsFile,
  writeBytesAtomically,
  writePlanned,
  type TensorSpec,
  type TensorToWrite,
} from "./writer.ts";
import { isFile } from "../../util/fs-checks.ts";

export interface WeightInfo extends TensorInfo {
  /** Absolute path of the file that holds the tensor. */
  file: string;
}

export interface WeightSource {
  readonly dir: string;
  /** Absolute paths of the .safetensors files. */
  readonly files: readonly string[];
  /** All tensor names, sorted. */
  names(): string[];
  info(name: string): WeightInfo;
  has(name: string): boolean;
  /**
   * The tensor's bytes. Float tensors are checked for NaN/inf (MODEL_INVALID naming it) unless `packed`:
   * quantized weights are bytes under a float dtype name (bnb's quant_storage) and are not numbers.
   */
  readTensor(name: string, options?: { packed?: boolean }): Promise<Uint8Array>;
  /**
   * Elements [first, end) of the tensor only (what one rank of a sharded load keeps), checked like readTensor.
   * For a packed tensor the elements are its stored elements (bytes under U8).
   */
  readTensorRange(name: string, first: number, end: number, options?: { packed?: boolean }): Promise<Uint8Array>;
  close(): Promise<void>;
}

export const SINGLE_FILE = "model.safetensors";
export const INDEX_FILE = "model.safetensors.index.json";
/** transformers' default max_shard_size ("5GB" = 5 * 10**9 bytes). */
export const DEFAULT_MAX_SHARD_BYTES = 5 * 10 ** 9;

/**
 * Opens the weights of a model folder. Like transformers, model.safetensors wins over an index.
 * A path to a single .safetensors file is accepted too (e.g. an adapter_model.safetensors).
 */
export async function openWeights(dir: string): Promise<WeightSource> {
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch (e) {
    throw fsError(dir, "open the weights in", e);
  }
  if (!isDir) return openWeightsFile(dir);
  const root = resolve(dir);
  if (await isFile(join(root, SINGLE_FILE))) return openWeightsFile(join(root, SINGLE_FILE));
  if (await isFile(join(root, INDEX_FILE))) return openIndexed(root);
  const names = (await readdir(root)).sort();
  const others = names.filter((n) => n.endsWith(".safetensors"));
  if (others.length > 0) {
    throw new TunaError(
      "MODEL_INVALID",
      `${dir} has neither ${SINGLE_FILE} nor ${INDEX_FILE}, but holds ${others.join(", ")}; ` +
        `pass the file itself (e.g. ${join(dir, others[0] ?? "")}) to open one of them.`,
    );
  }
  const bins = names.filter((n) => n.endsWith(".bin") || n.endsWith(".pt") || n.endsWith(".pth"));
  const found = bins.length > 0 ? ` (found ${bins.join(", ")}: tuna reads only safetensors; convert them first)` : "";
  throw new TunaError("MODEL_INVALID", `${dir} holds no safetensors weights: no ${SINGLE_FILE} or ${INDEX_FILE}${found}.`);
}

/** Wraps one .safetensors file as a WeightSource whose dir is the file's folder. */
export async function openWeightsFile(path: string): Promise<WeightSource> {
  const file = resolve(path);
  const opened = await openSafetensors(file);
  const infos = new Map<string, WeightInfo>();
  for (const info of opened.tensors.values()) infos.set(info.name, { ...info, file });
  return makeSource(dirname(file), [opened], infos);
}

function indexError(indexPath: string, what: string): TunaError {
  return new TunaError("FILE_FORMAT", `${indexPath} is not a valid weight index: ${what}. Re-download the model or save it again.`);
}

async function openIndexed(root: string): Promise<WeightSource> {
  const indexPath = join(root, INDEX_FILE);
  let text: string;
  try {
    text = await readFile(indexPath, "utf8");
  } catch (e) {
    throw fsError(indexPath, "read", e);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw indexError(indexPath, `it is not valid JSON (${(e as Error).message})`);
  }
  const weightMap = typeof json === "object" && json !== null && "weight_map" in json ? json.weight_map : undefined;
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    throw indexError(indexPath, `it has no "weight_map" object`);
  }
  // JSON.parse keeps only the last of two equal keys, which would hide a tensor mapped twice.
  const duplicate = findDuplicateJsonKey(text);
  if (duplicate !== undefined) {
    throw indexError(indexPath, `the key "${duplicate.key}" appears twice in ${duplicate.parent ?? "the top-level object"}`);
  }
  const shardOf = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    const file = typeof shard === "string" && shard !== "" && !isAbsolute(shard) ? resolve(root, shard) : undefined;
    // A shard must sit inside the model folder: "../x.safetensors" would read a file the model does not own.
    if (file === undefined || !isInside(root, file)) {
      throw indexError(indexPath, `weight_map["${name}"] is ${JSON.stringify(shard)}, not a file name in the model folder`);
    }
    shardOf.set(name, file);
  }
  const shardFiles = [...new Set(shardOf.values())].sort();
  for (const file of shardFiles) {
    if (!(await isFile(file))) {
      const example = [...shardOf].find(([, f]) => f === file)?.[0] ?? "";
      throw new TunaError(
        "FILE_NOT_FOUND",
        `${indexPath} maps tensors (e.g. "${example}") to ${basename(file)}, which is missing from ${root}; ` +
          `the download is incomplete: download the model again.`,
      );
    }
  }
  const opened: SafetensorsFile[] = [];
  try {
    for (const file of shardFiles) opened.push(await openSafetensors(file));
    const infos = new Map<string, WeightInfo>();
    for (const shard of opened) {
      for (const info of shard.tensors.values()) {
        const other = infos.get(info.name);
        if (other !== undefined) {
          throw indexError(indexPath, `the tensor "${info.name}" is stored in both ${basename(other.file)} and ${basename(shard.path)}`);
        }
        infos.set(info.name, { ...info, file: shard.path });
      }
    }
    for (const [name, file] of shardOf) {
      if (infos.get(name)?.file !== file) {
        throw indexError(indexPath, `weight_map puts "${name}" in ${basename(file)}, but that shard does not contain it`);
      }
    }
    // Tensors present in a shard but absent from weight_map are kept: transformers loads every
    // tensor of each shard it opens.
    return makeSource(root, opened, infos);
  } catch (e) {
    await Promise.all(opened.map((f) => f.close()));
    throw e;
  }
}

function makeSource(dir: string, opened: readonly SafetensorsFile[], infos: ReadonlyMap<string, WeightInfo>): WeightSource {
  const byPath = new Map(opened.map((f) => [f.path, f]));
  const sortedNames = [...infos.keys()].sort();
  const info = (name: string): WeightInfo => {
    const found = infos.get(name);
    if (found === undefined) {
      throw new TunaError("MODEL_INVALID", `the weights in ${dir} have no tensor named "${name}"; the checkpoint does not match the model.`);
    }
    return found;
  };
  const readElements = async (name: string, first: number, end: number | undefined, packed: boolean): Promise<Uint8Array> => {
    const found = info(name);
    const file = byPath.get(found.file);
    if (file === undefined) throw new TunaError("INTERNAL", `no open file for ${found.file}`);
    const bits = dtypeBits(found.dtype);
    if (end !== undefined && ((first * bits) % 8 !== 0 || (end * bits) % 8 !== 0)) {
      throw new TunaError("INTERNAL", `elements [${first}, ${end}) of "${name}" (${found.dtype}) do not start and end on a byte`);
    }
    const bytes = end === undefined ? await file.readTensor(name) : await file.readTensorRange(name, (first * bits) / 8, (end * bits) / 8);
    if (packed) return bytes;
    // Weights are read once, where they are used: NaN or inf is named here, before it trains or is merged.
    const bad = firstNonFinite(bytes, found.dtype);
    if (bad >= 0) {
      throw new TunaError(
        "MODEL_INVALID",
        `${found.file}: tensor "${name}" holds ${describeNonFinite(bytes, found.dtype, bad)} at element ${first + bad} of ` +
          `${found.shape.reduce((a, b) => a * b, 1)}; the weights are corrupt or come from a diverged run. ` +
          "Download or convert them again, or use an earlier checkpoint.",
      );
    }
    return bytes;
  };
  return {
    dir,
    files: opened.map((f) => f.path),
    names: () => [...sortedNames],
    info,
    has: (name) => infos.has(name),
    readTensor: (name, options) => readElements(name, 0, undefined, options?.packed === true),
    readTensorRange: (name, first, end, options) => readElements(name, first, end, options?.packed === true),
    close: async () => {
      await Promise.all(opened.map((f) => f.close()));
    },
  };
}

export interface ShardOptions {
  /** A new shard starts when adding a tensor would pass this size (a bigger tensor gets a shard alone). */
  maxShardBytes?: number;
  metadata?: Record<string, string>;
}

/**
 * Writes model.safetensors when everything fits in one shard, else model-0000i-of-0000N.safetensors
 * plus model.safetensors.index.json; tensors go to shards in input order. Files of a previous save
 * with these names are removed, so a stale model.safetensors cannot shadow the new index.
 * Returns the absolute paths written: the shards, then the index when there is one.
 */
export async function writeShardedSafetensors(dir: string, tensors: readonly TensorToWrite[], options?: ShardOptions): Promise<string[]> {
  const produce = checkTensorData(planSafetensorsFile(tensors, options?.metadata), tensors);
  return writeShardedSafetensorsStreaming(dir, tensors, produce, options);
}

/** The streaming form of writeShardedSafetensors: one tensor in memory at a time. */
export async function writeShardedSafetensorsStreaming(
  dir: string,
  specs: readonly TensorSpec[],
  produce: (spec: TensorSpec) => Promise<Uint8Array>,
  options?: ShardOptions,
): Promise<string[]> {
  const maxShardBytes = options?.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  if (!(maxShardBytes > 0)) throw new TunaError("INTERNAL", `maxShardBytes must be positive, got ${maxShardBytes}`);
  // Validates names, dtypes and shapes of the whole set (duplicates across shards included).
  const whole = planSafetensorsFile(specs, options?.metadata);
  const sizeOf = new Map(whole.entries.map((e) => [e.name, e.byteLength]));

  const shards: TensorSpec[][] = [];
  let current: TensorSpec[] = [];
  let currentBytes = 0;
  for (const spec of specs) {
    const size = sizeOf.get(spec.name) ?? 0;
    if (current.length > 0 && currentBytes + size > maxShardBytes) {
      shards.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(spec);
    currentBytes += size;
  }
  if (current.length > 0 || shards.length === 0) shards.push(current);

  const root = resolve(dir);
  try {
    await mkdir(root, { recursive: true });
  } catch (e) {
    throw fsError(root, "create the folder", e);
  }
  const n = shards.length;
  const shardName = (i: number): string =>
    n === 1 ? SINGLE_FILE : `model-${String(i + 1).padStart(5, "0")}-of-${String(n).padStart(5, "0")}.safetensors`;
  const written: string[] = [];
  const weightMap = new Map<string, string>();
  for (const [i, shard] of shards.entries()) {
    const path = join(root, shardName(i));
    await writePlanned(path, planSafetensorsFile(shard, options?.metadata), produce);
    written.push(path);
    for (const spec of shard) weightMap.set(spec.name, shardName(i));
  }
  if (n > 1) {
    const totalSize = [...sizeOf.values()].reduce((a, b) => a + b, 0);
    const sortedMap = Object.fromEntries([...weightMap].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    // transformers writes json.dumps(index, indent=2, sort_keys=True) + "\n".
    const text = `${JSON.stringify({ metadata: { total_size: totalSize }, weight_map: sortedMap }, null, 2)}\n`;
    const indexPath = join(root, INDEX_FILE);
    await writeBytesAtomically(indexPath, new TextEncoder().encode(text));
    written.push(indexPath);
  }
  await removeStaleWeights(root, written);
  return written;
}

const WEIGHT_FILE = /^model(-\d{5}-of-\d{5})?\.safetensors$|^model\.safetensors\.index\.json$/;

async function removeStaleWeights(root: string, keep: readonly string[]): Promise<void> {
  const kept = new Set(keep.map((p) => basename(p)));
  for (const name of await readdir(root)) {
    if (WEIGHT_FILE.test(name) && !kept.has(name)) await rm(join(root, name), { force: true });
  }
}
