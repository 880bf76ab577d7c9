// Test fixtures for the dataset sources: temporary folders, and Arrow IPC streams shaped like HF's
// save_to_disk shards (schema metadata "huggingface", messages as list<struct<role, content>>).

import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Field, Float64, Int64, List, RecordBatch, Schema, Struct, Table, Utf8, tableToIPC, vectorFromArray } from "apache-arrow";

export async function withTempDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "tuna-data-"));
  try {
    await run(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function writeText(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, text);
}

export interface ChatRow {
  id: number;
  messages: { role: string; content: string }[];
  score: number;
}

const MESSAGE = new Struct([new Field("role", new Utf8(), true), new Field("content", new Utf8(), true)]);
const MESSAGES = new List(new Field("item", MESSAGE, true));

// HF features JSON for ChatRow, as datasets writes it into the schema metadata.
const HF_FEATURES = {
  id: { dtype: "int64", _type: "Value" },
  messages: [{ role: { dtype: "string", _type: "Value" }, content: { dtype: "string", _type: "Value" } }],
  score: { dtype: "float64", _type: "Value" },
};

/** Arrow IPC stream bytes of ChatRows, one record batch per `batchRows` rows, with HF's schema metadata. */
export function chatArrowStream(rows: ChatRow[], batchRows = 1000): Uint8Array {
  const metadata = new Map([["huggingface", JSON.stringify({ info: { features: HF_FEATURES }, fingerprint: "0123abcd" })]]);
  const schema = new Schema(
    [new Field("id", new Int64(), true), new Field("messages", MESSAGES, true), new Field("score", new Float64(), true)],
    metadata,
  );
  const batches: RecordBatch[] = [];
  for (let start = 0; start < rows.length; start += batchRows) {
    const part = rows.slice(start, start + batchRows);
    const table = new Table({
      id: vectorFromArray(part.map((r) => BigInt(r.id)), new Int64()),
      messages: vectorFromArray(part.map((r) => r.messages), MESSAGES),
      score: vectorFromArray(part.map((r) => r.score), new Float64()),
    });
    for (const batch of table.batches) batches.push(new RecordBatch(schema, batch.data));
  }
  return tableToIPC(new Table(schema, batches), "stream");
}

export function chatRows(prefix: string, n: number, firstId = 0): ChatRow[] {
  return Array.from({ length: n }, (_, i) => ({
    id: firstId + i,
    messages: [
      { role: "user", content: `${prefix} q${firstId + i}` },
      { role: "assistant", content: `${prefix} a${firstId + i}` },
    ],
    score: (firstId + i) / 2,
  }));
}

/** HF Dataset folder: state.json (sorted keys, indent 2) listing the shards, plus the shards. */
export async function writeDatasetFolder(folder: string, shards: ChatRow[][], split: string | null): Promise<void> {
  await mkdir(folder, { recursive: true });
  const n = shards.length;
  const names = shards.map((_, i) => `data-${String(i).padStart(5, "0")}-of-${String(n).padStart(5, "0")}.arrow`);
  for (const [i, shard] of shards.entries()) await writeFile(join(folder, names[i]!), chatArrowStream(shard, 2));
  const state = {
    _data_files: names.map((filename) => ({ filename })),
    _fingerprint: "0123abcd",
    _format_columns: null,
    _format_kwargs: {},
    _format_type: null,
    _output_all_columns: false,
    _split: split,
  };
  await writeFile(join(folder, "state.json"), JSON.stringify(state, null, 2));
  await writeFile(join(folder, "dataset_info.json"), JSON.stringify({ builder_name: null, features: HF_FEATURES }));
}
