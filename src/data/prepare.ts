// The data stage end to end, as TRL's SFT trainer prepares a dataset: load the splits, detect the
// format, tokenize with the chat template and loss masks (on worker threads), drop/truncate, pack;
// the result of each split is cached under a fingerprint of everything that shapes it.
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { TunaError } from "../util/errors.ts";
import { readPreparedCache, writePreparedCache } from "./cache.ts";
import { datasetFingerprint } from "./fingerprint.ts";
import { TOKENIZATION_REVISION } from "../tokenizer/load.ts";
import { detectFormat, formatOrigin, toExample } from "./formats.ts";
import { noPacking, packBfd, packWrapped } from "./pack.ts";
import { loadDataset } from "./sources/load.ts";
import { TOKENIZE_JOB_URL, tokenizeChunk, type TokenizerRecipe } from "./tokenize-job.ts";
import type { Example, PackedSequence, SplitRows, SplitStats, TokenizedExample } from "./types.ts";
import { runInWorkers } from "../util/worker-pool.ts";

export interface DataOptions {
  datasetName: string;
  splits: string[];
  datasetTextField: string;
  maxLength: number;
  packing: boolean;
  packingStrategy: "bfd" | "wrapped";
  dropLongExamples: boolean;
  skipBadRows: boolean;
  testSplitRatio: number;
  seed: number;
}

export interface PreparedSplit {
  split: string;
  sequences: PackedSequence[];
  stats: SplitStats;
  fromCache: boolean;
  /** The tokenized examples (only when freshly prepared; `tuna data --show` uses them). */
  examples?: TokenizedExample[];
}

export interface PrepareOptions {
  data: DataOptions;
  recipe: TokenizerRecipe;
  /** Tokenizer files and the chat template file, hashed into the fingerprint. */
  tokenizerFiles: string[];
  cacheDir: string;
  threads?: number;
  useCache?: boolean;
  onNotice?: (message: string) => void;
}

// Below this many examples a split is tokenized in-process: starting workers costs more.
const WORKER_THRESHOLD = 2000;
const CHUNK_EXAMPLES = 500;

async function tokenizeAll(examples: Example[], where: string[], recipe: TokenizerRecipe, threads: number): Promise<{ tokenized: TokenizedExample[]; fallbacks: number }> {
  const chunks = [];
  for (let i = 0; i < examples.length; i += CHUNK_EXAMPLES) {
    chunks.push({ recipe, examples: examples.slice(i, i + CHUNK_EXAMPLES), firstRow: i, where: where.slice(i, i + CHUNK_EXAMPLES) });
  }
  const results =
    examples.length < WORKER_THRESHOLD || threads <= 1
      ? await Promise.all(chunks.map((c) => tokenizeChunk(c)))
      : await runInWorkers<typeof tokenizeChunk>(TOKENIZE_JOB_URL, "tokenizeChunk", chunks, threads);
  return { tokenized: results.flatMap((r) => r.examples), fallbacks: results.reduce((a, r) => a + r.boundaryFallbacks, 0) };
}

function statsOf(split: string, rows: number, dropped: number, truncated: number, sequences: PackedSequence[], d: DataOptions): SplitStats {
  let tokens = 0;
  let trainedTokens = 0;
  for (const s of sequences) {
    tokens += s.inputIds.length;
    for (const t of s.trained) trainedTokens += t;
  }
  return {
    split,
    rows,
    dropped,
    truncated,
    tokens,
    trainedTokens,
    sequences: sequences.length,
    // Packed: how full the max_length sequences are. Unpacked: not defined until batches pad them.
    packingEfficiency: d.packing && sequences.length > 0 ? tokens / (sequences.length * d.maxLength) : NaN,
  };
}

async function prepareSplit(rows: SplitRows, o: PrepareOptions): Promise<PreparedSplit> {
  const d = o.data;
  const files = [...new Set(rows.files)];
  const fingerprint = await datasetFingerprint(
    {
      files: [...files, ...o.tokenizerFiles].map((path) => ({ path })),
      split: rows.split,
      rows: rows.rows.length,
      data: { ...d, splits: undefined },
      recipe: { ...o.recipe, tokenizerDir: undefined },
      tokenization: TOKENIZATION_REVISION,
    },
    { hashCacheFile: join(o.cacheDir, "file-hashes.json") },
  );
  if (o.useCache !== false) {
    const cached = await readPreparedCache(o.cacheDir, fingerprint);
    if (cached.hit) return { split: rows.split, sequences: cached.data.sequences, stats: cached.data.stats, fromCache: true };
    if (cached.notice !== undefined) o.onNotice?.(cached.notice);
  }
  if (rows.rows.length === 0) throw new TunaError("CONFIG_INVALID", `split "${rows.split}" of ${d.datasetName} has no rows.`);
  const format = detectFormat(rows.columns, rows.rows.slice(0, 5), { datasetTextField: d.datasetTextField });
  const examples = rows.rows.map((row, i) => toExample(row, format, rows.origins[i]!));
  const where = rows.origins.map((origin) => formatOrigin(origin));
  const { tokenized, fallbacks } = await tokenizeAll(examples, where, o.recipe, o.threads ?? availableParallelism());
  if (fallbacks > 0) o.onNotice?.(`${rows.split}: ${fallbacks} example(s) had a token across a mask boundary and were tokenized in parts.`);
  let dropped = 0;
  let truncated = 0;
  const kept = tokenized.filter((t) => {
    if (t.truncatedTokens > 0) {
      if (d.dropLongExamples) {
        dropped++;
        return false;
      }
      truncated++;
    }
    // TRL drops examples whose labels are all -100: they carry no training signal.
    if (t.inputIds.length === 0 || !t.trained.some((x) => x === 1)) {
      dropped++;
      return false;
    }
    return true;
  });
  if (kept.length === 0) {
    throw new TunaError("CONFIG_INVALID", `split "${rows.split}": no example is left with a trained token (${dropped} dropped); check the loss-mask options and max_seq_length.`);
  }
  const sequences = !d.packing
    ? noPacking(kept)
    : d.packingStrategy === "wrapped"
      ? packWrapped(kept, d.maxLength, { dropRemainder: false })
      : packBfd(kept, d.maxLength, { overflow: "truncate" });
  const stats = statsOf(rows.split, rows.rows.length + rows.skipped, dropped + rows.skipped, truncated, sequences, d);
  if (o.useCache !== false) await writePreparedCache(o.cacheDir, fingerprint, { sequences, stats, meta: { format: format.kind, dataset: d.datasetName } });
  return { split: rows.split, sequences, stats, fromCache: false, examples: kept };
}

export async function prepareDatasets(o: PrepareOptions): Promise<Map<string, PreparedSplit>> {
  const d = o.data;
  const splits = await loadDataset(d.datasetName, {
    splits: d.splits,
    skipBadRows: d.skipBadRows,
    testSplitRatio: d.testSplitRatio,
    seed: d.seed,
    ...(o.onNotice === undefined ? {} : { onNotice: o.onNotice }),
  });
  const out = new Map<string, PreparedSplit>();
  for (const [name, rows] of splits) {
    if (rows.skipped > 0) o.onNotice?.(`${name}: skipped ${rows.skipped} malformed row(s).`);
    out.set(name, await prepareSplit(rows, o));
  }
  return out;
}
