// HF `save_to_disk` folders: a DatasetDict (dataset_dict.json + <split>/state.json), a single Dataset
// (state.json at the top) and the seed's `load_from_disk(name/split)` form (name/<split>/state.json).

import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { TunaError } from "../../util/errors.ts";
import { readJsonFile } from "../../util/json-file.ts";
import type { SplitFiles } from "./hub-splits.ts";
import { isFile } from "../../util/fs-checks.ts";

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

interface DatasetState {
  files: string[];
  split: string | undefined;
}

/** A Dataset folder's arrow files in state.json `_data_files` order (the order rows are concatenated in). */
async function readState(folder: string, display: string): Promise<DatasetState> {
  const path = join(folder, "state.json");
  const state = await readJsonFile(path, "dataset state.json");
  const entries = isRecord(state) ? state._data_files : undefined;
  const files = Array.isArray(entries)
    ? entries.map((e) => (isRecord(e) && typeof e.filename === "string" ? e.filename : undefined))
    : [];
  if (!Array.isArray(entries) || files.some((f) => f === undefined)) {
    throw new TunaError(
      "FILE_FORMAT",
      `${display}/state.json: "_data_files" must be a list of {"filename": "data-00000-of-00001.arrow"}; ` +
        `the folder is not a complete save_to_disk Dataset, save it again.`,
    );
  }
  const names = files as string[];
  for (const name of names) {
    if (!(await isFile(join(folder, name)))) {
      throw new TunaError("FILE_NOT_FOUND", `${display}/${name}, listed in ${display}/state.json, does not exist; save the dataset again.`);
    }
  }
  const split = isRecord(state) && typeof state._split === "string" && state._split !== "" ? state._split : undefined;
  return { files: names, split };
}

function prefixed(prefix: string, files: string[]): string[] {
  return files.map((f) => (prefix === "" ? f : `${prefix}/${f}`));
}

/**
 * The splits of a save_to_disk folder as folder-relative arrow files, or undefined when `root` is not one.
 * `display` names the folder in messages.
 */
export async function saveToDiskSplits(root: string, display: string): Promise<SplitFiles | undefined> {
  if (await isFile(join(root, "dataset_dict.json"))) {
    const dict = await readJsonFile(join(root, "dataset_dict.json"), "dataset_dict.json");
    const splits = isRecord(dict) ? dict.splits : undefined;
    if (!Array.isArray(splits) || !splits.every((s) => typeof s === "string")) {
      throw new TunaError("FILE_FORMAT", `${display}/dataset_dict.json: "splits" must be a list of split names, like {"splits": ["train", "test"]}.`);
    }
    const out: SplitFiles = new Map();
    for (const split of splits) {
      const folder = join(root, split);
      if (!(await isFile(join(folder, "state.json")))) {
        throw new TunaError("FILE_NOT_FOUND", `${display}/dataset_dict.json lists split "${split}" but ${display}/${split}/state.json does not exist.`);
      }
      out.set(split, prefixed(split, (await readState(folder, `${display}/${split}`)).files));
    }
    return out;
  }
  if (await isFile(join(root, "state.json"))) {
    const state = await readState(root, display);
    return new Map([[state.split ?? "train", state.files]]);
  }
  // The seed's form: no top-level file, one Dataset folder per split, each named after its split.
  const out: SplitFiles = new Map();
  const entries = await readdir(root, { withFileTypes: true });
  for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (entry.name.startsWith(".") || !(await isFile(join(root, entry.name, "state.json")))) continue;
    out.set(entry.name, prefixed(entry.name, (await readState(join(root, entry.name), `${display}/${entry.name}`)).files));
  }
  return out.size > 0 ? out : undefined;
}
