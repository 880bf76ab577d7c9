// Readers for the columnar formats: Parquet (hyparquet, with snappy/zstd/gzip/brotli/lz4) and Arrow IPC
// (apache-arrow; HF save_to_disk writes streams). Rows come back as plain JS: arrays, objects, numbers.

import { readFile } from "node:fs/promises";
import { tableFromIPC, Vector } from "apache-arrow";
import type { Table } from "apache-arrow";
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } from "hyparquet";
import { compressors } from "hyparquet-compressors";
import type { Row, RowOrigin } from "../types.ts";
import { TunaError, errorMessage } from "../../util/errors.ts";
import type { FileRows, ReadFileOptions } from "./file-rows.ts";

/**
 * A decoded value as plain data: int64 bigints become numbers when exactly representable (else stay
 * bigint), Arrow vectors and typed arrays become arrays, Arrow struct/map rows become objects.
 * Binary values (Uint8Array) and dates are kept as they are.
 */
export function plainValue(value: unknown): unknown {
  if (typeof value === "bigint") {
    return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
  }
  if (value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map(plainValue);
  if (value instanceof Uint8Array || value instanceof Date) return value;
  if (value instanceof Vector) return Array.from(value as Iterable<unknown>, plainValue);
  if (ArrayBuffer.isView(value)) return Array.from(value as unknown as ArrayLike<unknown>, plainValue);
  // Arrow's StructRow / MapRow give their fields through toJSON; nested values are converted below.
  const toJSON = (value as { toJSON?: unknown }).toJSON;
  const fields = typeof toJSON === "function" ? (toJSON.call(value) as unknown) : value;
  if (fields === null || typeof fields !== "object") return fields;
  const out: Row = {};
  for (const [key, field] of Object.entries(fields)) out[key] = plainValue(field);
  return out;
}

function unreadable(display: string, what: string, e: unknown): TunaError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return new TunaError("FILE_NOT_FOUND", `dataset file not found: ${display}`, { cause: e });
  return new TunaError(
    "FILE_FORMAT",
    `${display}: not a readable ${what} file (${errorMessage(e)}); re-download or re-export it.`,
    { cause: e },
  );
}

export async function readParquetFile(path: string, options: ReadFileOptions): Promise<FileRows> {
  const { display } = options;
  try {
    const file = await asyncBufferFromFile(path);
    const metadata = await parquetMetadataAsync(file);
    const columns = parquetSchema(metadata).children.map((child) => child.element.name);
    const decoded = await parquetReadObjects({ file, metadata, compressors });
    const rows: Row[] = [];
    const origins: RowOrigin[] = [];
    decoded.forEach((record, row) => {
      const out: Row = {};
      for (const name of columns) out[name] = plainValue(record[name]);
      rows.push(out);
      origins.push({ file: display, row });
    });
    return { rows, origins, columns, skipped: 0 };
  } catch (e) {
    throw unreadable(display, "Parquet", e);
  }
}

/** An Arrow IPC stream (HF save_to_disk's data-*.arrow) or IPC file; tableFromIPC tells them apart. */
export async function readArrowFile(path: string, options: ReadFileOptions): Promise<FileRows> {
  const { display } = options;
  let table: Table;
  try {
    table = tableFromIPC(await readFile(path));
    // tableFromIPC reads too-short or empty input as an empty table; a real stream always has a schema.
    if (table.schema.fields.length === 0) throw new Error("no schema message");
  } catch (e) {
    throw unreadable(display, "Arrow IPC", e);
  }
  const columns = table.schema.fields.map((field) => field.name);
  const rows: Row[] = [];
  const origins: RowOrigin[] = [];
  for (let row = 0; row < table.numRows; row++) {
    rows.push({});
    origins.push({ file: display, row });
  }
  columns.forEach((name, c) => {
    const vector = table.getChildAt(c);
    if (vector === null) return;
    let row = 0;
    for (const value of vector as Iterable<unknown>) (rows[row++] as Row)[name] = plainValue(value);
  });
  return { rows, origins, columns, skipped: 0 };
}
