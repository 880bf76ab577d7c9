// The data pipeline's contract: raw rows from a source, normalized examples, tokenized examples with
// their loss mask, and packed sequences. Each stage is a function from one of these to the next.
import type { ChatMessage } from "../tokenizer/chat-template.ts";

/** One raw row as the source holds it (JSON object, CSV record, Arrow/Parquet row). */
export type Row = Record<string, unknown>;

/** Where a row came from, for error messages: "data/train.jsonl:17" or "train-00000-of-00001.parquet row 3". */
export interface RowOrigin {
  file: string;
  /** 1-based line for text formats, 0-based row index for columnar ones. */
  line?: number;
  row?: number;
}

export interface SplitRows {
  split: string;
  rows: Row[];
  origins: RowOrigin[];
  /** The files read, as paths on disk (origins name them for people: a hub file is hf://datasets/...). */
  files: string[];
  /** Column names in order of first appearance. */
  columns: string[];
  /** Rows skipped as malformed (only when the user allowed skipping). */
  skipped: number;
}

export type DatasetFormat =
  | { kind: "text"; field: string }
  | { kind: "messages"; field: string } // [{role, content}]
  | { kind: "sharegpt"; field: string } // [{from, value}]
  | { kind: "prompt_completion"; conversational: boolean }
  | { kind: "alpaca" } // instruction / input / output
  | { kind: "tokens" }; // input_ids (+ labels)

/** A row normalized to one of the shapes the tokenizer stage understands. */
export type Example =
  | { kind: "text"; text: string }
  | { kind: "conversation"; messages: ChatMessage[] }
  | { kind: "prompt_completion"; prompt: string; completion: string }
  | { kind: "prompt_completion_chat"; prompt: ChatMessage[]; completion: ChatMessage[] }
  | { kind: "tokens"; inputIds: number[]; labels?: number[] };

/**
 * A tokenized example: ids and, per token, whether that token is a training target (its label is the
 * token itself; the model shifts). Tokens with trained = 0 get label -100.
 */
export interface TokenizedExample {
  inputIds: Int32Array;
  trained: Uint8Array;
  /** Index of the source row in its split, for messages and `tuna data --show`. */
  row: number;
  /** Tokens cut off by truncation (0 when the example fit). */
  truncatedTokens: number;
}

/**
 * A training sequence: one or more documents laid end to end. `docLengths` delimits the documents
 * (attention and the next-token shift never cross a boundary); one document when not packed, and a
 * single "document" spanning everything for the `wrapped` strategy (the seed's constant-length packing,
 * where examples attend to each other).
 */
export interface PackedSequence {
  inputIds: Int32Array;
  trained: Uint8Array;
  docLengths: number[];
  /** Source rows of the documents, in order (a wrapped sequence may list a row twice or partially). */
  rows: number[];
}

export interface SplitStats {
  split: string;
  rows: number;
  /** Examples dropped: empty after tokenization, no trained token, or too long with the drop option. */
  dropped: number;
  truncated: number;
  tokens: number;
  trainedTokens: number;
  sequences: number;
  /** tokens / (sequences * max_length) when packed; tokens / (padded batch tokens) otherwise. */
  packingEfficiency: number;
}
