// Reads a pre-tokenized JSONL dataset: one object per line with `input_ids`, optional `labels`
// (HF convention: same length, -100 ignored, shifted inside the model) and `attention_mask`.
import { open, type FileHandle } from "node:fs/promises";
import { createInterface } from "node:readline";
import { TunaError, errorMessage } from "../util/errors.ts";
import type { HfRow } from "./batch.ts";

function intArray(value: unknown, field: string, where: string): number[] {
  if (!Array.isArray(value) || !value.every((v) => Number.isInteger(v))) {
    throw new TunaError("FILE_FORMAT", `${where}: "${field}" must be an array of integers`);
  }
  return value as number[];
}

export async function readPretokenizedJsonl(path: string): Promise<HfRow[]> {
  const rows: HfRow[] = [];
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new TunaError(code === "ENOENT" ? "FILE_NOT_FOUND" : "IO", `cannot read dataset ${path}: ${errorMessage(e)}`, { cause: e });
  }
  let lineNo = 0;
  const stream = handle.createReadStream({ encoding: "utf8" });
  for await (const line of createInterface({ input: stream, crlfDelay: Infinity })) {
    lineNo++;
    if (line.trim() === "") continue;
    const where = `${path}:${lineNo}`;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new TunaError("FILE_FORMAT", `${where}: not valid JSON (${errorMessage(e)})`, { cause: e });
    }
    if (typeof obj !== "object" || obj === null || Array.isArray(obj)) throw new TunaError("FILE_FORMAT", `${where}: expected a JSON object`);
    const o = obj as Record<string, unknown>;
    if (!("input_ids" in o)) {
      throw new TunaError("FILE_FORMAT", `${where}: no "input_ids" column (found: ${Object.keys(o).join(", ") || "none"}); tuna eval reads pre-tokenized data`);
    }
    const inputIds = intArray(o["input_ids"], "input_ids", where);
    if (inputIds.length === 0) throw new TunaError("FILE_FORMAT", `${where}: "input_ids" is empty`);
    const row: HfRow = { inputIds };
    if (o["labels"] !== undefined && o["labels"] !== null) row.labels = intArray(o["labels"], "labels", where);
    if (o["attention_mask"] !== undefined && o["attention_mask"] !== null) row.attentionMask = intArray(o["attention_mask"], "attention_mask", where);
    if ((row.labels !== undefined && row.labels.length !== inputIds.length) || (row.attentionMask !== undefined && row.attentionMask.length !== inputIds.length)) {
      throw new TunaError("FILE_FORMAT", `${where}: "labels" and "attention_mask" must have the same length as "input_ids" (${inputIds.length})`);
    }
    rows.push(row);
  }
  if (rows.length === 0) throw new TunaError("FILE_FORMAT", `${path}: the dataset has no rows`);
  return rows;
}
