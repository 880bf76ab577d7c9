// <output_dir>/metrics.jsonl: one JSON object per log event, each written with a single write call so a
// crash loses at most the line being written; the reader drops such a torn last line.
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { TunaError, errorMessage } from "../../util/errors.ts";
import type { LogEntry, LogValue } from "./log-entry.ts";

export const METRICS_FILE = "metrics.jsonl";

export function metricsJsonlPath(outputDir: string): string {
  return join(outputDir, METRICS_FILE);
}

// JSON has no NaN or Infinity, and a NaN loss is exactly what a reader must see, so non-finite
// numbers are written as these strings (Python's json writes bare NaN, which JSON.parse and jq reject).
const NON_FINITE: Record<string, number> = { NaN: Number.NaN, Infinity: Number.POSITIVE_INFINITY, "-Infinity": Number.NEGATIVE_INFINITY };

/** One line of the file, without its newline: undefined values are left out, non-finite numbers become strings. */
export function serializeLogEntry(entry: LogEntry): string {
  return JSON.stringify(entry, (_key, value: unknown) => (typeof value === "number" && !Number.isFinite(value) ? String(value) : value));
}

function parseEntry(line: string): LogEntry | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return undefined;
  const entry: Record<string, LogValue> = {};
  for (const [key, value] of Object.entries(parsed as Record<string, unknown>)) {
    if (typeof value === "string" && value in NON_FINITE) entry[key] = NON_FINITE[value]!;
    else if (value === null || typeof value === "number" || typeof value === "string" || typeof value === "boolean") entry[key] = value;
    else entry[key] = JSON.stringify(value);
  }
  const step = entry.step;
  if (typeof step !== "number" || !Number.isInteger(step)) return undefined;
  return { ...entry, step };
}

export interface MetricsJsonlContent {
  entries: LogEntry[];
  /** The last line when it was cut off mid-write (no newline and not a complete entry); it is not in `entries`. */
  tornLine?: string;
}

/**
 * Parses metrics.jsonl text. A last line without its newline that does not parse is a torn write and
 * is dropped; any other line that is not a JSON object with an integer `step` is an error naming
 * `path` and the line number.
 */
export function parseMetricsJsonl(text: string, path: string): MetricsJsonlContent {
  const lines = text.split("\n");
  const last = lines.pop() ?? "";
  const entries: LogEntry[] = [];
  lines.forEach((line, index) => {
    if (line.trim() === "") return;
    const entry = parseEntry(line);
    if (entry === undefined) {
      throw new TunaError("FILE_FORMAT", `${path}:${index + 1} is not a log entry (a JSON object with an integer "step"): ${line.slice(0, 80)}; fix or delete that line.`);
    }
    entries.push(entry);
  });
  if (last.trim() === "") return { entries };
  const entry = parseEntry(last);
  if (entry === undefined) return { entries, tornLine: last };
  entries.push(entry);
  return { entries };
}

export async function readMetricsJsonl(path: string): Promise<MetricsJsonlContent> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new TunaError("FILE_NOT_FOUND", `metrics file not found: ${path}`, { cause: e });
    throw new TunaError("IO", `cannot read metrics file ${path}: ${errorMessage(e)}`, { cause: e });
  }
  return parseMetricsJsonl(text, path);
}

export interface MetricsJsonlWriter {
  readonly path: string;
  append(entry: LogEntry): void;
  close(): void;
}

export interface MetricsJsonlOptions {
  /**
   * Resuming from the checkpoint of this step: keep the existing entries up to and including it, drop
   * later ones (the crashed run logged them and the resumed run logs them again) and any torn line.
   * Unset: a new run, the file starts empty.
   */
  resumeAtStep?: number;
}

/** Opens `path` (usually `metricsJsonlPath(output_dir)`) for appending; writes are synchronous, one per entry. */
export function createMetricsJsonlWriter(path: string, options: MetricsJsonlOptions = {}): MetricsJsonlWriter {
  let fd: number;
  try {
    mkdirSync(dirname(path), { recursive: true });
    if (options.resumeAtStep === undefined || !existsSync(path)) {
      fd = openSync(path, "w");
    } else {
      const kept = parseMetricsJsonl(readFileSync(path, "utf8"), path).entries.filter((e) => e.step <= options.resumeAtStep!);
      // Staged and renamed so that a crash here leaves either the old file or the trimmed one.
      const staging = `${path}.tmp-${process.pid}`;
      writeFileSync(staging, kept.map((e) => serializeLogEntry(e) + "\n").join(""));
      renameSync(staging, path);
      fd = openSync(path, "a");
    }
  } catch (e) {
    if (e instanceof TunaError) throw e;
    throw new TunaError("IO", `cannot open metrics file ${path}: ${errorMessage(e)}; check that output_dir is writable.`, { cause: e });
  }
  let closed = false;
  return {
    path,
    append(entry) {
      if (closed) throw new TunaError("INTERNAL", `metrics file ${path} is closed; append() came after close().`);
      const bytes = Buffer.from(serializeLogEntry(entry) + "\n", "utf8");
      try {
        let written = 0;
        while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
      } catch (e) {
        throw new TunaError("IO", `cannot write metrics file ${path}: ${errorMessage(e)}`, { cause: e });
      }
    },
    close() {
      if (closed) return;
      closed = true;
      closeSync(fd);
    },
  };
}
