// Readers for the text dataset formats: JSON Lines, JSON (rows, columns or a {"data": [...]} field) and
// CSV (header row, values kept as strings). Malformed rows fail with file:line, or are skipped and counted.

import { createReadStream } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { parse as parseCsv } from "csv-parse/sync";
import type { Row, RowOrigin } from "../types.ts";
import { TunaError, errorMessage } from "../../util/errors.ts";
import { columnsOfRows } from "./file-rows.ts";
import type { FileRows, ReadFileOptions } from "./file-rows.ts";
import { decodeUtf8File, firstInvalidUtf8, invalidUtf8Error } from "./utf8.ts";

const SKIP_HINT = "fix or remove it, or let tuna skip malformed rows";

/** Fails with FILE_NOT_FOUND / IO before any reading, so a missing file never looks like an empty one. */
async function checkReadable(path: string, display: string): Promise<void> {
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new TunaError("FILE_FORMAT", `${display} is not a file.`);
  } catch (e) {
    if (e instanceof TunaError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new TunaError(code === "ENOENT" ? "FILE_NOT_FOUND" : "IO", `cannot read dataset file ${display}: ${errorMessage(e)}`, {
      cause: e,
    });
  }
}

async function readText(path: string, display: string): Promise<string> {
  await checkReadable(path, display);
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new TunaError("IO", `cannot read dataset file ${display}: ${errorMessage(e)}`, { cause: e });
  }
  return decodeUtf8File(bytes, display);
}

function stripBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

function describeJson(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

function isObject(value: unknown): value is Row {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Accumulates JSON Lines rows; shared by the .jsonl reader and .json files that turn out to be JSON Lines. */
function jsonLinesCollector(display: string, skipBadRows: boolean) {
  const out: FileRows = { rows: [], origins: [], columns: [], skipped: 0 };
  /** One line's bytes (no "\n"); `offset` is where it starts in the file, for invalid UTF-8 errors. */
  const addBytes = (bytes: Buffer, line: number, offset: number): void => {
    const end = bytes.length > 0 && bytes[bytes.length - 1] === 13 ? bytes.length - 1 : bytes.length;
    const body = bytes.subarray(0, end);
    const bad = firstInvalidUtf8(body);
    if (bad < 0) add(body.toString("utf8"), line);
    else if (skipBadRows) out.skipped++;
    else throw invalidUtf8Error(display, line, offset + bad, body[bad]!);
  };
  const add = (rawLine: string, line: number): void => {
    const text = line === 1 ? stripBom(rawLine) : rawLine;
    if (text.trim() === "") return;
    let value: unknown;
    let problem: string | undefined;
    try {
      value = JSON.parse(text);
      if (!isObject(value)) problem = `expected one JSON object per line, got ${describeJson(value)}`;
    } catch (e) {
      problem = `not valid JSON (${errorMessage(e)})`;
    }
    if (problem === undefined) {
      out.rows.push(value as Row);
      out.origins.push({ file: display, line });
    } else if (skipBadRows) {
      out.skipped++;
    } else {
      throw new TunaError("FILE_FORMAT", `${display}:${line}: ${problem}; ${SKIP_HINT}.`);
    }
  };
  const finish = (): FileRows => ({ ...out, columns: columnsOfRows(out.rows) });
  return { add, addBytes, finish };
}

/** JSON Lines: one object per line; blank lines are ignored. Streams, so files past V8's string limit work. */
export async function readJsonLinesFile(path: string, options: ReadFileOptions): Promise<FileRows> {
  await checkReadable(path, options.display);
  const collect = jsonLinesCollector(options.display, options.skipBadRows);
  // Lines are cut at the byte level so each can be checked as strict UTF-8 and located by byte offset.
  let line = 0;
  let offset = 0;
  let pending: Buffer[] = [];
  try {
    for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
      let start = 0;
      for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, start)) {
        const piece = chunk.subarray(start, nl);
        const bytes = pending.length === 0 ? piece : Buffer.concat([...pending, piece]);
        pending = [];
        collect.addBytes(bytes, ++line, offset);
        offset += bytes.length + 1;
        start = nl + 1;
      }
      if (start < chunk.length) pending.push(chunk.subarray(start));
    }
    if (pending.length > 0) collect.addBytes(Buffer.concat(pending), ++line, offset);
  } catch (e) {
    if (e instanceof TunaError) throw e;
    throw new TunaError("IO", `cannot read dataset file ${options.display}: ${errorMessage(e)}`, { cause: e });
  }
  return collect.finish();
}

// HF's json loader takes a `field` holding the rows; without it these are the names such files use.
const ROW_FIELDS = ["data", "rows"];

/**
 * A .json file: an array of row objects, an object of equal-length columns ({"text": [...]}), an object
 * whose "data" or "rows" field is the array of rows, or (as HF's loader also accepts) JSON Lines.
 */
export async function readJsonRowsFile(path: string, options: ReadFileOptions): Promise<FileRows> {
  const { display } = options;
  const text = await readText(path, display);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    const lines = text.split("\n").filter((l) => l.trim() !== "");
    if (lines.length > 1 && isObject(tryParse(lines[0] ?? ""))) return jsonLinesFromText(text, options);
    throw new TunaError("FILE_FORMAT", `${display}: not valid JSON (${errorMessage(e)}); fix the file.`, { cause: e });
  }
  if (Array.isArray(value)) return rowsFromArray(value, options);
  if (isObject(value)) {
    for (const field of ROW_FIELDS) {
      const rows = value[field];
      if (Array.isArray(rows) && rows.some(isObject)) return rowsFromArray(rows, options);
    }
    const columns = Object.entries(value);
    const lengths = new Set(columns.map(([, v]) => (Array.isArray(v) ? v.length : -1)));
    if (columns.length > 0 && !lengths.has(-1) && lengths.size === 1) return rowsFromColumns(value, display);
    // A one-line JSON Lines file parses as a single object.
    if (text.trim().split("\n").length === 1) return jsonLinesFromText(text, options);
  }
  const found = isObject(value)
    ? `an object with keys ${Object.keys(value).slice(0, 10).join(", ") || "(none)"}`
    : describeJson(value);
  throw new TunaError(
    "FILE_FORMAT",
    `${display}: a JSON dataset must be an array of row objects ([{"text": ...}, ...]), an object of equal-length ` +
      `columns ({"text": [...]}), an object with the rows under "data" or "rows", or JSON Lines; found ${found}.`,
  );
}

function tryParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function jsonLinesFromText(text: string, options: ReadFileOptions): FileRows {
  const collect = jsonLinesCollector(options.display, options.skipBadRows);
  text.split("\n").forEach((line, i) => {
    collect.add(line.endsWith("\r") ? line.slice(0, -1) : line, i + 1);
  });
  return collect.finish();
}

function rowsFromArray(values: unknown[], options: ReadFileOptions): FileRows {
  const out: FileRows = { rows: [], origins: [], columns: [], skipped: 0 };
  values.forEach((value, row) => {
    if (isObject(value)) {
      out.rows.push(value);
      out.origins.push({ file: options.display, row });
    } else if (options.skipBadRows) {
      out.skipped++;
    } else {
      throw new TunaError("FILE_FORMAT", `${options.display} row ${row}: expected a JSON object, got ${describeJson(value)}; ${SKIP_HINT}.`);
    }
  });
  out.columns = columnsOfRows(out.rows);
  return out;
}

function rowsFromColumns(table: Row, display: string): FileRows {
  const columns = Object.keys(table);
  const arrays = columns.map((name) => table[name] as unknown[]);
  const n = arrays[0]?.length ?? 0;
  const rows: Row[] = [];
  const origins: RowOrigin[] = [];
  for (let r = 0; r < n; r++) {
    const row: Row = {};
    columns.forEach((name, c) => (row[name] = arrays[c]?.[r]));
    rows.push(row);
    origins.push({ file: display, row: r });
  }
  return { rows, origins, columns, skipped: 0 };
}

/**
 * CSV with a header row; every value stays a string. Records with the wrong field count fail or are skipped.
 * A row's origin is the line its record ends on (the same line unless a quoted field spans lines).
 */
export async function readCsvFile(path: string, options: ReadFileOptions): Promise<FileRows> {
  const { display } = options;
  const text = await readText(path, display);
  const lines: number[] = [];
  let skipped = 0;
  let records: string[][];
  try {
    records = parseCsv(text, {
      skip_empty_lines: true,
      skip_records_with_error: options.skipBadRows,
      on_skip: () => {
        skipped++;
        return undefined;
      },
      on_record: (record: string[], context) => {
        lines.push(context.lines);
        return record;
      },
    });
  } catch (e) {
    const line = (e as { lines?: unknown }).lines;
    const where = typeof line === "number" ? `${display}:${line}` : display;
    throw new TunaError("FILE_FORMAT", `${where}: not valid CSV (${errorMessage(e)}); ${SKIP_HINT}.`, { cause: e });
  }
  const [header, ...body] = records;
  if (header === undefined) throw new TunaError("FILE_FORMAT", `${display}: the CSV file is empty; it needs a header row.`);
  const duplicate = header.find((name, i) => header.indexOf(name) !== i);
  if (duplicate !== undefined) {
    throw new TunaError("FILE_FORMAT", `${display}:${lines[0] ?? 1}: the header names column "${duplicate}" twice; rename one.`);
  }
  const rows: Row[] = [];
  const origins: RowOrigin[] = [];
  body.forEach((record, i) => {
    const row: Row = {};
    header.forEach((name, c) => (row[name] = record[c]));
    rows.push(row);
    origins.push({ file: display, line: lines[i + 1] ?? 0 });
  });
  return { rows, origins, columns: [...header], skipped };
}
