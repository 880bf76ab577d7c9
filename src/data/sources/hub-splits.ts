// The hub's split detection for a repo or folder of data files (datasets' data_files.py): sharded
// data/{split}-NNNNN-of-NNNNN files, then split keywords in directory names, then in file names, else train.

import { DATA_FILE_MODULES } from "./file-rows.ts";
import { TunaError } from "../../util/errors.ts";

/** Split name -> repo-relative file paths (forward slashes), in the order they are read. */
export type SplitFiles = Map<string, string[]>;

/** Files datasets never reads as data (data_files.py FILES_TO_IGNORE, the entries that matter here). */
export const FILES_TO_IGNORE = new Set([
  "README.md",
  "config.json",
  "dataset_info.json",
  "dataset_infos.json",
  "dummy_data.zip",
  "dataset_dict.json",
]);

const SPLIT_KEYWORDS: readonly (readonly [string, readonly string[]])[] = [
  ["train", ["train", "training"]],
  ["validation", ["validation", "valid", "dev", "val"]],
  ["test", ["test", "testing", "eval", "evaluation"]],
];

// NON_WORDS_CHARS "-._ 0-9" as a regex class; glob `*` never crosses a "/", so all matching is per segment.
const SEP = "[-._ 0-9]";

// KEYWORDS_IN_DIR_NAME_BASE_PATTERNS: **/{kw}/**, **/{kw}[sep]*/**, **/*[sep]{kw}/**, **/*[sep]{kw}[sep]*/**
function dirPatterns(kw: string): RegExp[] {
  return [new RegExp(`^${kw}$`), new RegExp(`^${kw}${SEP}.*$`), new RegExp(`^.*${SEP}${kw}$`), new RegExp(`^.*${SEP}${kw}${SEP}.*$`)];
}

// KEYWORDS_IN_FILENAME_BASE_PATTERNS: **/{kw}[sep]*, **/*[sep]{kw}[sep]*
function fileNamePatterns(kw: string): RegExp[] {
  return [new RegExp(`^${kw}${SEP}.*$`), new RegExp(`^.*${SEP}${kw}${SEP}.*$`)];
}

// SPLIT_PATTERN_SHARDED "data/{split}-[0-9]{5}-of-[0-9]{5}*.*"; the split must then match _split_re.
const SHARDED = /^data\/([^/]+)-[0-9]{5}-of-[0-9]{5}[^/]*\.[^/]*$/;
const SPLIT_NAME = /^\w+(\.\w+)*$/;

function sortedSplits(names: Iterable<string>): string[] {
  const known = ["train", "validation", "test"];
  const all = [...new Set(names)];
  return [...known.filter((s) => all.includes(s)), ...all.filter((s) => !known.includes(s)).sort()];
}

function shardedSplits(files: readonly string[]): SplitFiles | undefined {
  const bySplit = new Map<string, string[]>();
  for (const file of [...files].sort()) {
    const split = SHARDED.exec(file)?.[1];
    if (split === undefined) continue;
    if (!SPLIT_NAME.test(split)) {
      throw new TunaError(
        "FILE_FORMAT",
        `${file}: "${split}" is not a valid split name (letters, digits and _, optionally dot-separated); rename the file.`,
      );
    }
    bySplit.set(split, [...(bySplit.get(split) ?? []), file]);
  }
  if (bySplit.size === 0) return undefined;
  return new Map(sortedSplits(bySplit.keys()).map((s) => [s, bySplit.get(s) ?? []]));
}

/** Per split, files matching any pattern, pattern by pattern (each pattern's matches sorted), no duplicates. */
function keywordSplits(files: readonly string[], matches: (file: string, pattern: RegExp) => boolean, patterns: (kw: string) => RegExp[]): SplitFiles | undefined {
  const sorted = [...files].sort();
  const out: SplitFiles = new Map();
  for (const [split, keywords] of SPLIT_KEYWORDS) {
    const found = new Set<string>();
    for (const kw of keywords) for (const pattern of patterns(kw)) for (const f of sorted) if (matches(f, pattern)) found.add(f);
    if (found.size > 0) out.set(split, [...found]);
  }
  return out.size > 0 ? out : undefined;
}

const inDirName = (file: string, pattern: RegExp): boolean => file.split("/").slice(0, -1).some((dir) => pattern.test(dir));
const inFileName = (file: string, pattern: RegExp): boolean => pattern.test(file.split("/").pop() ?? "");

/**
 * Splits of a list of data files (repo-relative paths), by the first rule that matches (spec §2). Then, like
 * datasets, only files of the most common format are kept (.json and .jsonl count as one format); a split left
 * without files is dropped. `**\/*.eval` -> "logs" is not implemented: tuna reads no .eval files.
 */
export function splitsFromDataFiles(files: readonly string[]): SplitFiles {
  const candidates = files.filter((f) => !FILES_TO_IGNORE.has(f.split("/").pop() ?? ""));
  const splits =
    shardedSplits(candidates) ??
    keywordSplits(candidates, inDirName, dirPatterns) ??
    keywordSplits(candidates, inFileName, fileNamePatterns) ??
    new Map([["train", [...candidates].sort()]]);
  const module = mostCommonModule(candidates);
  const out: SplitFiles = new Map();
  for (const [split, list] of splits) {
    const kept = list.filter((f) => moduleOf(f) === module);
    if (kept.length > 0) out.set(split, kept);
  }
  return out;
}

function moduleOf(file: string): string | undefined {
  const dot = file.lastIndexOf(".");
  return dot < 0 ? undefined : DATA_FILE_MODULES[file.slice(dot).toLowerCase()];
}

// datasets counts extensions (not formats) and takes the most common supported one; ties go to the first seen.
function mostCommonModule(files: readonly string[]): string | undefined {
  const counts = new Map<string, number>();
  for (const f of files) {
    const dot = f.lastIndexOf(".");
    if (dot >= 0 && moduleOf(f) !== undefined) {
      const ext = f.slice(dot).toLowerCase();
      counts.set(ext, (counts.get(ext) ?? 0) + 1);
    }
  }
  let best: string | undefined;
  let bestCount = 0;
  for (const [ext, count] of counts) {
    if (count > bestCount) {
      best = ext;
      bestCount = count;
    }
  }
  return best === undefined ? undefined : DATA_FILE_MODULES[best];
}
