// loadDataset: a data file, a folder of data files, a save_to_disk folder or a hub dataset id -> the rows
// of exactly the requested splits, with a seeded train/test hold-out when a dataset only has "train".

import { readdir, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { resolveDatasetPath } from "../../hub/resolve.ts";
import type { ResolveOptions } from "../../hub/resolve.ts";
import { localPathFor } from "../../hub/repo-id.ts";
import { TunaError, errorMessage } from "../../util/errors.ts";
import { createRng } from "../../util/random.ts";
import type { Row, RowOrigin, SplitRows } from "../types.ts";
import { isDataFile, mergeColumns, readDataFile } from "./file-rows.ts";
import { splitsFromDataFiles } from "./hub-splits.ts";
import type { SplitFiles } from "./hub-splits.ts";
import { saveToDiskSplits } from "./save-to-disk.ts";

export interface LoadDatasetOptions {
  /** Splits to return, in this order; each must exist (but see testSplitRatio). */
  splits: string[];
  /** Skip malformed rows of JSON Lines / JSON / CSV files (counted in SplitRows.skipped) instead of failing. */
  skipBadRows?: boolean;
  /**
   * When the dataset has only "train" and "test" is requested: the fraction of train rows held out as test
   * (ceil(n * ratio) rows). 0 or unset: a missing "test" is an error.
   */
  testSplitRatio?: number;
  /** Seed of the hold-out shuffle; default 42 (the default `seed` of HF TrainingArguments). */
  seed?: number;
  /** Hub revision (branch, tag or commit) for hub ids; default "main". */
  revision?: string;
  /** Environment for HF_* settings; default process.env. */
  env?: NodeJS.ProcessEnv;
  onNotice?: ResolveOptions["onNotice"];
  onDownload?: ResolveOptions["onDownload"];
}

interface DataFile {
  path: string;
  /** How messages and row origins name it. */
  display: string;
}

type PlannedSplits = Map<string, DataFile[]>;

export const DEFAULT_SPLIT_SEED = 42;

/**
 * The requested splits of a dataset, keyed and ordered as requested. Local paths win over hub ids (a
 * path-like argument that does not exist is FILE_NOT_FOUND, never a download).
 */
export async function loadDataset(nameOrPath: string, options: LoadDatasetOptions): Promise<Map<string, SplitRows>> {
  const wanted = [...new Set(options.splits)];
  if (wanted.length === 0) throw new TunaError("CONFIG_INVALID", `no dataset splits were requested for ${nameOrPath}; name at least one, e.g. train.`);
  const ratio = options.testSplitRatio ?? 0;
  if (!Number.isFinite(ratio) || ratio < 0 || ratio >= 1) {
    throw new TunaError("CONFIG_INVALID", `the test split ratio must be at least 0 and below 1, got ${ratio}.`);
  }

  const planned = await planDataset(nameOrPath, options);
  const available = [...planned.keys()];
  const holdOut = ratio > 0 && wanted.includes("test") && available.length === 1 && available[0] === "train";
  const missing = wanted.filter((s) => !planned.has(s) && !(holdOut && s === "test"));
  if (missing.length > 0) {
    const onlyTrain = available.length === 1 && available[0] === "train" && missing.includes("test");
    throw new TunaError(
      "CONFIG_INVALID",
      `dataset ${nameOrPath} has no split ${missing.map((s) => `"${s}"`).join(", ")}; its splits are: ${available.join(", ")}. ` +
        `Request only those splits` +
        (onlyTrain ? `, or set a test split ratio above 0 to hold out part of "train" as "test".` : "."),
    );
  }

  const loaded = new Map<string, SplitRows>();
  for (const split of wanted) {
    if (holdOut && split === "test") continue;
    loaded.set(split, await readSplit(nameOrPath, split, planned.get(split) ?? [], options.skipBadRows ?? false));
  }
  if (holdOut) {
    const train = loaded.get("train") ?? (await readSplit(nameOrPath, "train", planned.get("train") ?? [], options.skipBadRows ?? false));
    const parts = holdOutTestSplit(train, ratio, options.seed ?? DEFAULT_SPLIT_SEED);
    loaded.set("train", parts.train);
    loaded.set("test", parts.test);
  }
  return new Map(wanted.map((s) => [s, loaded.get(s)!]));
}

/**
 * Hold out ceil(n * ratio) rows of `train` as "test": a Fisher-Yates shuffle of the row indices driven by
 * util/random.ts seeded with `seed` (from the last index down, j = floor(uniform() * (i + 1))); the first
 * ceil(n * ratio) shuffled indices become test, the rest train, both in shuffled order (as HF's
 * train_test_split). The same rows, seed and ratio give the same split on every run and machine.
 * Skipped-row counts stay with train.
 */
export function holdOutTestSplit(train: SplitRows, ratio: number, seed: number): { train: SplitRows; test: SplitRows } {
  const n = train.rows.length;
  const testCount = Math.ceil(n * ratio);
  if (testCount >= n) {
    throw new TunaError(
      "CONFIG_INVALID",
      `a test split ratio of ${ratio} would hold out ${testCount} of the ${n} train rows, leaving none to train on; use a smaller ratio or more data.`,
    );
  }
  const order = Array.from({ length: n }, (_, i) => i);
  const rng = createRng(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    const tmp = order[i]!;
    order[i] = order[j]!;
    order[j] = tmp;
  }
  const pick = (split: string, indices: number[], skipped: number): SplitRows => ({
    split,
    rows: indices.map((i) => train.rows[i]!),
    origins: indices.map((i) => train.origins[i]!),
    files: [...train.files],
    columns: [...train.columns],
    skipped,
  });
  return { test: pick("test", order.slice(0, testCount), 0), train: pick("train", order.slice(testCount), train.skipped) };
}

async function planDataset(nameOrPath: string, options: LoadDatasetOptions): Promise<PlannedSplits> {
  const local = localPathFor(nameOrPath, "dataset", true);
  let root: string;
  let display: (rel: string) => string;
  if (local !== undefined) {
    root = local;
    display = (rel) => (rel === "" ? nameOrPath : join(nameOrPath, rel));
  } else {
    const resolveOptions: ResolveOptions = {};
    if (options.revision !== undefined) resolveOptions.revision = options.revision;
    if (options.env !== undefined) resolveOptions.env = options.env;
    if (options.onNotice !== undefined) resolveOptions.onNotice = options.onNotice;
    if (options.onDownload !== undefined) resolveOptions.onDownload = options.onDownload;
    // Fetch what HF datasets would read from the repo: the data files of its detected splits.
    resolveOptions.selectDataFiles = (repoFiles) => [...splitsFromDataFiles(repoFiles.filter(isDataFile)).values()].flat();
    root = await resolveDatasetPath(nameOrPath, resolveOptions);
    display = (rel) => `hf://datasets/${nameOrPath}${rel === "" ? "" : `/${rel}`}`;
  }

  if ((await stat(root)).isFile()) return new Map([["train", [{ path: root, display: display("") }]]]);
  const splits: SplitFiles =
    (await saveToDiskSplits(root, display(""))) ?? splitsFromDataFiles(await listDataFiles(root));
  if (splits.size === 0) {
    throw new TunaError(
      "FILE_FORMAT",
      `${display("")} holds no dataset: no save_to_disk files (dataset_dict.json, state.json) and no data files ` +
        `(*.jsonl, *.json, *.csv, *.parquet, *.arrow).`,
    );
  }
  return new Map([...splits].map(([split, files]) => [split, files.map((rel) => ({ path: join(root, rel), display: display(rel) }))]));
}

/** Data files under a folder, repo-relative with "/", following symlinks (hub snapshots), skipping hidden and __ entries. */
async function listDataFiles(folder: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  let names: string[];
  try {
    names = (await readdir(folder)).sort();
  } catch (e) {
    throw new TunaError("IO", `cannot list dataset folder ${folder}: ${errorMessage(e)}`, { cause: e });
  }
  for (const name of names) {
    if (name.startsWith(".") || name.startsWith("__")) continue;
    const rel = prefix === "" ? name : `${prefix}/${name}`;
    const info = await stat(join(folder, name)).catch(() => undefined);
    if (info?.isDirectory() === true) out.push(...(await listDataFiles(join(folder, name), rel)));
    else if (info?.isFile() === true && isDataFile(name)) out.push(rel);
  }
  return out;
}

async function readSplit(name: string, split: string, files: DataFile[], skipBadRows: boolean): Promise<SplitRows> {
  const rows: Row[] = [];
  const origins: RowOrigin[] = [];
  const columnLists: string[][] = [];
  let skipped = 0;
  for (const file of files) {
    const part = await readDataFile(file.path, { display: file.display, skipBadRows });
    for (const row of part.rows) rows.push(row);
    for (const origin of part.origins) origins.push(origin);
    columnLists.push(part.columns);
    skipped += part.skipped;
  }
  if (rows.length === 0) {
    const names = files.map((f) => f.display).join(", ");
    throw new TunaError(
      "CONFIG_INVALID",
      `split "${split}" of dataset ${name} is empty (files: ${names || basename(name)})` +
        (skipped > 0 ? `: all ${skipped} rows were malformed and skipped.` : `.`) +
        ` Add rows, or leave the split out.`,
    );
  }
  const columns = mergeColumns(columnLists);
  // Rows missing a column get null, as in an Arrow table built by HF's JSON loader.
  for (const row of rows) for (const column of columns) if (!(column in row)) row[column] = null;
  return { split, rows, origins, files: files.map((f) => f.path), columns, skipped };
}
