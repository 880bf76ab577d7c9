// `tuna data`: prepares the dataset exactly as `tuna train` with the same flags would (same cache), prints
// per-split statistics as a table or JSON, and shows the first examples with their trained tokens marked.
import { performance } from "node:perf_hooks";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { TRAIN_FIELDS, formatResolvedConfig, parseTrainArgs, type FieldName } from "../../config/index.ts";
import { setupChatFormat } from "../../data/chat-format.ts";
import { prepareDatasets, type PreparedSplit } from "../../data/prepare.ts";
import { decodePieces, examplesToShow, renderMarked, type MarkStyle, type ShownExample } from "../../data/show.ts";
import { specialTokenOverrides, trainPrepareOptions } from "../../data/train-options.ts";
import { resolveModelPath } from "../../hub/resolve.ts";
import { readModelConfig } from "../../hf/folder.ts";
import { loadTokenizer, type LoadedTokenizer } from "../../tokenizer/load.ts";
import { TunaError } from "../../util/errors.ts";
import { processOutput, type CliOutput } from "../output.ts";

// The train flags that decide what the prepared data looks like (all others are accepted and ignored).
const DATA_FLAGS: readonly FieldName[] = [
  "model_name_or_path",
  "dataset_name",
  "splits",
  "test_split_ratio",
  "dataset_text_field",
  "chat_template_format",
  "max_seq_length",
  "packing",
  "packing_strategy",
  "append_concat_token",
  "add_special_tokens",
  "assistant_only_loss",
  "completion_only_loss",
  "truncation_mode",
  "drop_long_examples",
  "skip_bad_rows",
  "seed",
  "output_dir",
];

function renderHelp(): string {
  const width = Math.max(...DATA_FLAGS.map((f) => f.length)) + 2;
  return [
    "usage: tuna data [CONFIG.yaml | CONFIG.json] --model_name_or_path M --dataset_name D [train flags] [--json] [--show N] [--no_cache]",
    "",
    "Prepares the dataset as `tuna train` with the same flags does: loads the splits, renders chats, tokenizes",
    "with the loss masks, truncates or drops, packs, and caches each split under <output_dir>/.tuna-cache,",
    "where the training run finds it. Prints per split: rows, tokens, trained tokens, truncated and dropped",
    "examples, sequences, packing efficiency, and whether it came from the cache.",
    "  --json        print one JSON object: {\"splits\": {NAME: {...}}, \"cache\": PATH}",
    "  --show N      print the first N examples of the train split, decoded token by token, trained tokens",
    "                marked: green on a terminal (dim = not trained), [[...]] otherwise",
    "  --no_cache    neither read nor write the prepared-data cache",
    "  --export DIR  write each prepared split as DIR/<split>.jsonl: one row per document, {\"input_ids\", \"labels\"}",
    "                (-100 where not trained), the pre-tokenized form tuna eval and transformers read",
    "",
    "Train flags that shape the data (every other `tuna train` flag is accepted too; see tuna train --help):",
    ...DATA_FLAGS.map((f) => `  --${f.padEnd(width)}${TRAIN_FIELDS[f].doc}`),
  ].join("\n");
}

interface DataFlags {
  json: boolean;
  /** Folder to write each prepared split into as pre-tokenized JSONL. */
  exportDir: string | undefined;
  show: number | undefined;
  noCache: boolean;
  /** Everything else, for the train configuration parser. */
  trainArgs: string[];
}

/** Takes --json, --show N and --no_cache out of the arguments; the rest are train flags. */
function takeDataFlags(args: readonly string[]): DataFlags {
  const flags: DataFlags = { json: false, exportDir: undefined, show: undefined, noCache: false, trainArgs: [] };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      flags.trainArgs.push(...args.slice(i));
      break;
    }
    const eq = arg.indexOf("=");
    const name = arg.startsWith("--") ? (eq >= 0 ? arg.slice(2, eq) : arg.slice(2)).replaceAll("-", "_") : "";
    const inline = eq >= 0 ? arg.slice(eq + 1) : undefined;
    if (name === "json" || name === "no_cache") {
      if (inline !== undefined) throw new TunaError("CONFIG_INVALID", `--${name} takes no value, got "${arg}".`);
      if (name === "json") flags.json = true;
      else flags.noCache = true;
    } else if (name === "export") {
      const raw = inline ?? args[++i];
      if (raw === undefined || raw.startsWith("--")) throw new TunaError("CONFIG_INVALID", "--export expects the folder to write <split>.jsonl files into.");
      flags.exportDir = raw;
    } else if (name === "show") {
      const raw = inline ?? args[++i];
      if (raw === undefined || !/^\d+$/.test(raw) || Number(raw) < 1) {
        throw new TunaError("CONFIG_INVALID", `--show expects how many examples to print (an integer >= 1), got ${raw === undefined ? "nothing" : JSON.stringify(raw)}.`);
      }
      flags.show = Number(raw);
    } else {
      flags.trainArgs.push(arg);
    }
  }
  return flags;
}

const percent = (x: number): string => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : "-");

/** The statistics as an aligned table: text columns left-aligned, numbers right-aligned. */
function statsTable(splits: readonly PreparedSplit[]): string {
  const header = ["split", "rows", "tokens", "trained", "truncated", "dropped", "sequences", "efficiency", "cached"];
  const rows = splits.map((p) => {
    const s = p.stats;
    return [p.split, s.rows, s.tokens, s.trainedTokens, s.truncated, s.dropped, s.sequences, percent(s.packingEfficiency), p.fromCache ? "yes" : "no"].map(String);
  });
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  const leftAligned = (c: number): boolean => c === 0 || c === header.length - 1;
  const line = (cells: readonly string[]): string =>
    cells.map((cell, c) => (leftAligned(c) ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

function statsJson(p: PreparedSplit): Record<string, unknown> {
  const s = p.stats;
  return {
    rows: s.rows,
    tokens: s.tokens,
    trainedTokens: s.trainedTokens,
    truncated: s.truncated,
    dropped: s.dropped,
    sequences: s.sequences,
    // Not defined without packing (NaN), which JSON cannot hold.
    packingEfficiency: Number.isFinite(s.packingEfficiency) ? s.packingEfficiency : null,
    cached: p.fromCache,
  };
}

function describeExample(e: ShownExample, wrapped: boolean, index: number): string {
  const trained = e.trained.reduce((a, t) => a + t, 0);
  const where = wrapped ? `sequence ${index + 1} (rows ${e.rows.join(", ")})` : `row ${e.rows.join(", ")}`;
  return `${where}: ${e.inputIds.length} tokens, ${trained} trained`;
}

/** A terminal that takes colour: the real stdout when it is a TTY and NO_COLOR is not set. */
function markStyle(output: CliOutput): MarkStyle {
  const tty = output === processOutput && process.stdout.isTTY;
  return tty && (process.env["NO_COLOR"] ?? "") === "" ? "ansi" : "brackets";
}

/** A prepared split as pre-tokenized JSONL: each document a row, labels -100 where it is not trained. */
async function exportSplit(dir: string, split: PreparedSplit): Promise<string> {
  await mkdir(dir, { recursive: true });
  const lines: string[] = [];
  for (const seq of split.sequences) {
    let at = 0;
    for (const length of seq.docLengths) {
      const ids = Array.from(seq.inputIds.subarray(at, at + length));
      const labels = ids.map((id, t) => (seq.trained[at + t] === 1 ? id : -100));
      lines.push(JSON.stringify({ input_ids: ids, labels }));
      at += length;
    }
  }
  const path = join(dir, `${split.split}.jsonl`);
  await writeFile(path, lines.join("\n") + "\n");
  return path;
}

export async function dataCommand(args: string[], output: CliOutput): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    output.out(renderHelp());
    return 0;
  }
  const flags = takeDataFlags(args);
  const resolved = await parseTrainArgs(flags.trainArgs);
  const c = resolved.config;
  if (c.print_config) {
    output.out(formatResolvedConfig(resolved));
    return 0;
  }
  const notice = (m: string): void => {
    output.err(m);
  };
  // The same model folder and vocab size as training: both go into the cache fingerprint.
  const modelDir = await resolveModelPath(c.model_name_or_path, { ...(c.model_revision === undefined ? {} : { revision: c.model_revision }), onNotice: notice });
  const modelConfig = await readModelConfig(modelDir);
  const model = { dir: modelDir, vocabSize: modelConfig.vocabSize, modelType: modelConfig.modelType };
  const options = trainPrepareOptions(c, model);
  const started = performance.now();
  const splits = [...(await prepareDatasets({ ...options, useCache: !flags.noCache, onNotice: notice })).values()];
  output.err(`prepared ${splits.length} split(s) of ${c.dataset_name} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  const cache = flags.noCache ? null : options.cacheDir;
  if (flags.exportDir !== undefined) {
    for (const split of splits) output.err(`wrote ${await exportSplit(flags.exportDir, split)}`);
  }

  let shown: { examples: ShownExample[]; tokenizer: LoadedTokenizer; split: string } | undefined;
  const wrapped = c.packing && c.packing_strategy === "wrapped";
  if (flags.show !== undefined) {
    const train = splits.find((s) => s.split.includes("train"));
    if (train === undefined) throw new TunaError("CONFIG_INVALID", `--show prints the train split, but the splits are ${splits.map((s) => s.split).join(", ")}; add a train split to --splits.`);
    // The tokenizer with the chat format's added tokens, so that they decode as themselves.
    const { tokenizer } = setupChatFormat(await loadTokenizer(modelDir), c.chat_template_format, model.vocabSize, c.chat_template_file, specialTokenOverrides(c));
    shown = { examples: examplesToShow(train, flags.show, { wrapped }), tokenizer, split: train.split };
  }

  if (flags.json) {
    const result: Record<string, unknown> = { splits: Object.fromEntries(splits.map((p) => [p.split, statsJson(p)])), cache };
    if (shown !== undefined) {
      const { tokenizer } = shown;
      result["examples"] = shown.examples.map((e) => ({
        split: shown.split,
        rows: e.rows,
        tokens: e.inputIds.length,
        trainedTokens: e.trained.reduce((a, t) => a + t, 0),
        text: renderMarked(decodePieces(tokenizer, e.inputIds, e.trained), "brackets"),
      }));
    }
    output.out(JSON.stringify(result, null, 2));
    return 0;
  }
  output.out(statsTable(splits));
  output.out(cache === null ? "cache: off (--no_cache)" : `cache: ${cache}`);
  if (shown !== undefined) {
    const style = markStyle(output);
    output.out(style === "ansi" ? "\ntrained tokens in green, the rest dim:" : "\ntrained tokens between [[ and ]]:");
    shown.examples.forEach((e, i) => {
      output.out(`--- ${shown.split} ${describeExample(e, wrapped, i)} ---`);
      output.out(renderMarked(decodePieces(shown.tokenizer, e.inputIds, e.trained), style));
    });
  }
  return 0;
}
