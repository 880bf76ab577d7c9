// Reading one data file into rows, chosen by its extension (.jsonl, .json, .csv, .parquet, .arrow), with
// origins for error messages. The readers live beside this file; this one only dispatches.

import { extname } from "node:path";
import type { Row, RowOrigin } from "../types.ts";
import { TunaError } from "../../util/errors.ts";
import { readArrowFile, readParquetFile } from "./columnar.ts";
import { readCsvFile, readJsonLinesFile, readJsonRowsFile } from "./text-files.ts";

/** The rows of one file. `columns` lists names in schema order (columnar) or first appearance (text). */
export interface FileRows {
  rows: Row[];
  origins: RowOrigin[];
  columns: string[];
  skipped: number;
}

export interface ReadFileOptions {
  /** The name used in origins and messages (a path as the user wrote it, or hf://datasets/...). */
  display: string;
  /** Skip malformed rows of text formats (counted in `skipped`) instead of failing. */
  skipBadRows: boolean;
}

/** File formats by extension; the hub's modules group .json and .jsonl as one ("json"). */
export const DATA_FILE_MODULES: Readonly<Record<string, "json" | "csv" | "parquet" | "arrow">> = {
  ".jsonl": "json",
  ".json": "json",
  ".csv": "csv",
  ".parquet": "parquet",
  ".arrow": "arrow",
};

export function isDataFile(path: string): boolean {
  return extname(path).toLowerCase() in DATA_FILE_MODULES;
}

export async function readDataFile(path: string, options: ReadFileOptions): Promise<FileRows> {
  const ext = extname(path).toLowerCase();
  switch (ext) {
    case ".jsonl":
      return readJsonLinesFile(path, options);
    case ".json":
      return readJsonRowsFile(path, options);
    case ".csv":
      return readCsvFile(path, options);
    case ".parquet":
      return readParquetFile(path, options);
    case ".arrow":
      return readArrowFile(path, options);
    default:
      throw new TunaError(
        "FILE_FORMAT",
        `cannot read ${options.display}: tuna reads dataset files ending in ${Object.keys(DATA_FILE_MODULES).join(", ")}; ` +
          `convert the file to one of those (JSON Lines is the simplest).`,
      );
  }
}

/** Column names of several row sets in order of first appearance. */
export function mergeColumns(lists: readonly (readonly string[])[]): string[] {
  const seen = new Set<string>();
  for (const list of lists) for (const name of list) seen.add(name);
  return [...seen];
}

/** Column names of rows in order of first appearance. */
export function columnsOfRows(rows: readonly Row[]): string[] {
  const seen = new Set<string>();
  for (const row of rows) for (const key of Object.keys(row)) seen.add(key);
  return [...seen];
}
