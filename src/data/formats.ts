// Which of TRL's dataset formats a split holds (text, messages, ShareGPT, prompt/completion, Alpaca,
// pre-tokenized), and each raw row normalized to an Example, with errors naming file:line and column.

import type { ChatMessage } from "../tokenizer/chat-template.ts";
import { TunaError } from "../util/errors.ts";
import type { DatasetFormat, Example, Row, RowOrigin } from "./types.ts";

export interface DetectFormatOptions {
  /** Column of plain-text datasets (`--dataset_text_field`, TRL's dataset_text_field, default "text"). */
  datasetTextField: string;
  /** Explicit choice; it wins over detection and is checked against the columns. */
  format?: DatasetFormat["kind"];
}

/** "data/train.jsonl:17" for text formats, "train-00000-of-00001.parquet row 3" for columnar ones. */
export function formatOrigin(origin: RowOrigin): string {
  if (origin.line !== undefined) return `${origin.file}:${origin.line}`;
  if (origin.row !== undefined) return `${origin.file} row ${origin.row}`;
  return origin.file;
}

function describe(value: unknown): string {
  if (value === null || value === undefined) return "nothing (null)";
  if (Array.isArray(value)) return "a list";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** "messages" or "sharegpt" by the keys of the first message seen in these rows, undefined when none is. */
function messageStyle(rows: readonly Row[], field: string): "messages" | "sharegpt" | undefined {
  for (const row of rows) {
    const list = row[field];
    const first: unknown = Array.isArray(list) ? list[0] : undefined;
    if (!isObject(first)) continue;
    if ("from" in first && "value" in first) return "sharegpt";
    if ("role" in first && "content" in first) return "messages";
  }
  return undefined;
}

function holdsLists(rows: readonly Row[], field: string): boolean {
  const first = rows.map((r) => r[field]).find((v) => v !== null && v !== undefined);
  return Array.isArray(first);
}

const FORMAT_NEEDS: Readonly<Record<DatasetFormat["kind"], string>> = {
  text: "a string column named by --dataset_text_field",
  messages: `a "messages" (or "conversations") column of [{role, content}] lists`,
  sharegpt: `a "conversations" (or "messages") column of [{from, value}] lists`,
  prompt_completion: `"prompt" and "completion" columns (strings, or lists of {role, content} messages)`,
  alpaca: `"instruction" and "output" columns (and optionally "input")`,
  tokens: `an "input_ids" column of token ids (and optionally "labels")`,
};

/** The formats tuna reads and what each needs, plus a --dataset_text_field hint when a column holds text. */
function formatsHelp(columns: readonly string[], options: DetectFormatOptions, firstRows: readonly Row[]): string {
  const lines = (Object.keys(FORMAT_NEEDS) as DatasetFormat["kind"][]).map((kind) =>
    kind === "text"
      ? `  text: ${FORMAT_NEEDS.text} (now "${options.datasetTextField}")`
      : `  ${kind}: ${FORMAT_NEEDS[kind]}`,
  );
  const textColumns = columns.filter((c) => firstRows.some((r) => typeof r[c] === "string"));
  const hint =
    textColumns.length === 0
      ? ""
      : `\nTo train on plain text, pass --dataset_text_field ${textColumns[0]}` +
        (textColumns.length > 1 ? ` (text columns: ${textColumns.join(", ")}).` : ".");
  return `tuna reads these formats:\n${lines.join("\n")}${hint}`;
}

const columnList = (columns: readonly string[]): string => columns.join(", ") || "(none)";

function requireColumns(kind: DatasetFormat["kind"], needed: string[], columns: readonly string[], options: DetectFormatOptions, firstRows: readonly Row[]): void {
  const absent = needed.filter((c) => !columns.includes(c));
  if (absent.length === 0) return;
  throw new TunaError(
    "CONFIG_INVALID",
    `dataset format "${kind}" needs the column${absent.length > 1 ? "s" : ""} ${absent.map((c) => `"${c}"`).join(", ")}, ` +
      `but the dataset's columns are ${columnList(columns)}. ${formatsHelp(columns, options, firstRows)}`,
  );
}

/**
 * The format of a split from its columns and first rows. An explicit `format` wins (checked against the
 * columns). Otherwise, first match: input_ids -> tokens; messages -> messages (sharegpt when its entries
 * are {from, value}); conversations -> sharegpt (messages when its entries are {role, content});
 * prompt + completion -> prompt_completion (conversational when they hold message lists); instruction +
 * output -> alpaca; the dataset_text_field column -> text.
 */
export function detectFormat(columns: string[], firstRows: Row[], options: DetectFormatOptions): DatasetFormat {
  const has = (c: string): boolean => columns.includes(c);
  const promptCompletion = (): DatasetFormat => ({
    kind: "prompt_completion",
    conversational: holdsLists(firstRows, "prompt") || holdsLists(firstRows, "completion"),
  });
  const explicit = options.format;
  if (explicit !== undefined) {
    const require = (needed: string[]): void => {
      requireColumns(explicit, needed, columns, options, firstRows);
    };
    switch (explicit) {
      case "tokens":
        require(["input_ids"]);
        return { kind: "tokens" };
      case "text":
        require([options.datasetTextField]);
        return { kind: "text", field: options.datasetTextField };
      case "messages":
      case "sharegpt": {
        const preferred = explicit === "messages" ? ["messages", "conversations"] : ["conversations", "messages"];
        const field = preferred.find(has);
        if (field === undefined) require([preferred[0]!]);
        return { kind: explicit, field: field ?? preferred[0]! };
      }
      case "prompt_completion":
        require(["prompt", "completion"]);
        return promptCompletion();
      case "alpaca":
        require(["instruction", "output"]);
        return { kind: "alpaca" };
    }
  }
  if (has("input_ids")) return { kind: "tokens" };
  if (has("messages")) return { kind: messageStyle(firstRows, "messages") ?? "messages", field: "messages" };
  if (has("conversations")) return { kind: messageStyle(firstRows, "conversations") ?? "sharegpt", field: "conversations" };
  if (has("prompt") && has("completion")) return promptCompletion();
  if (has("instruction") && has("output")) return { kind: "alpaca" };
  if (has(options.datasetTextField)) return { kind: "text", field: options.datasetTextField };
  throw new TunaError(
    "CONFIG_INVALID",
    `cannot tell the dataset format from its columns (${columnList(columns)}). ${formatsHelp(columns, options, firstRows)}`,
  );
}

// ---- rows -> examples

function bad(where: string, problem: string): TunaError {
  return new TunaError("FILE_FORMAT", `${where}: ${problem}; fix the row or choose the dataset format that matches it.`);
}

function stringColumn(row: Row, column: string, where: string): string {
  const value = row[column];
  if (typeof value !== "string") throw bad(where, `column "${column}" must be a string, got ${describe(value)}`);
  return value;
}

/** Content as a string; a list of {type: "text", text} parts is joined with nothing in between, as chat templates concatenate them. */
function messageContent(value: unknown, at: string, where: string): string {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    return value
      .map((part, i) => {
        if (isObject(part) && part.type === "text" && typeof part.text === "string") return part.text;
        const type = isObject(part) && typeof part.type === "string" ? `"${part.type}"` : describe(part);
        throw bad(where, `${at}.content[${i}] is ${type}; only {"type": "text", "text": "..."} parts are supported`);
      })
      .join("");
  }
  throw bad(where, `${at}.content must be a string or a list of text parts, got ${describe(value)}`);
}

export function chatMessages(value: unknown, column: string, where: string): ChatMessage[] {
  if (!Array.isArray(value) || value.length === 0) throw bad(where, `column "${column}" must be a non-empty list of {role, content} messages, got ${Array.isArray(value) ? "an empty list" : describe(value)}`);
  return value.map((message, i) => {
    const at = `${column}[${i}]`;
    if (!isObject(message)) throw bad(where, `${at} must be an object {role, content}, got ${describe(message)}`);
    if (typeof message.role !== "string" || message.role === "") throw bad(where, `${at}.role must be a non-empty string, got ${describe(message.role)}`);
    // An assistant turn that only calls tools may have no content.
    const toolOnly = (message.content === null || message.content === undefined) && Array.isArray(message.tool_calls);
    const out: ChatMessage = { role: message.role, content: toolOnly ? "" : messageContent(message.content, at, where) };
    // Struct columns give every message every field; absent ones come back null and are dropped.
    for (const [key, extra] of Object.entries(message)) {
      if (key !== "role" && key !== "content" && extra !== null && extra !== undefined) out[key] = extra;
    }
    return out;
  });
}

const SHAREGPT_ROLES: Readonly<Record<string, string>> = {
  human: "user",
  user: "user",
  gpt: "assistant",
  assistant: "assistant",
  bot: "assistant",
  system: "system",
};

function shareGptMessages(value: unknown, column: string, where: string): ChatMessage[] {
  if (!Array.isArray(value) || value.length === 0) throw bad(where, `column "${column}" must be a non-empty list of {from, value} turns, got ${Array.isArray(value) ? "an empty list" : describe(value)}`);
  return value.map((turn, i) => {
    const at = `${column}[${i}]`;
    if (!isObject(turn)) throw bad(where, `${at} must be an object {from, value}, got ${describe(turn)}`);
    const from = turn.from;
    const role = typeof from === "string" ? SHAREGPT_ROLES[from.toLowerCase()] : undefined;
    if (role === undefined) {
      throw bad(where, `${at}.from is ${typeof from === "string" ? `"${from}"` : describe(from)}; allowed: ${Object.keys(SHAREGPT_ROLES).join(", ")}`);
    }
    if (typeof turn.value !== "string") throw bad(where, `${at}.value must be a string, got ${describe(turn.value)}`);
    return { role, content: turn.value };
  });
}

function tokenIds(value: unknown, column: string, where: string): number[] {
  if (!Array.isArray(value) || !value.every((v) => Number.isInteger(v))) throw bad(where, `column "${column}" must be a list of integer token ids, got ${describe(value)}`);
  return value as number[];
}

/*
 * Stanford Alpaca's prompts, from tatsu-lab/stanford_alpaca train.py PROMPT_DICT (the with-input form is used
 * when `input` is non-empty, `example.get("input", "") != ""`):
 *   "Below is an instruction that describes a task, paired with an input that provides further context. "
 *   "Write a response that appropriately completes the request.\n\n"
 *   "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
 * and
 *   "Below is an instruction that describes a task. "
 *   "Write a response that appropriately completes the request.\n\n"
 *   "### Instruction:\n{instruction}\n\n### Response:"
 * train.py appends the output directly after "### Response:"; the repo's README shows the output on the next
 * line ("### Response:\n{output}"), and that README form is what the published alpaca `text` column and
 * torchtune's AlpacaInstructTemplate use. tuna follows the README: the prompt ends with "### Response:\n".
 */
export function alpacaPrompt(instruction: string, input: string): string {
  if (input !== "") {
    return (
      "Below is an instruction that describes a task, paired with an input that provides further context. " +
      "Write a response that appropriately completes the request.\n\n" +
      `### Instruction:\n${instruction}\n\n### Input:\n${input}\n\n### Response:\n`
    );
  }
  return (
    "Below is an instruction that describes a task. " +
    "Write a response that appropriately completes the request.\n\n" +
    `### Instruction:\n${instruction}\n\n### Response:\n`
  );
}

/** One raw row as the Example its format describes; a wrong type fails with the row's origin and column. */
export function toExample(row: Row, format: DatasetFormat, origin: RowOrigin): Example {
  const where = formatOrigin(origin);
  switch (format.kind) {
    case "text":
      return { kind: "text", text: stringColumn(row, format.field, where) };
    case "messages":
      return { kind: "conversation", messages: chatMessages(row[format.field], format.field, where) };
    case "sharegpt":
      return { kind: "conversation", messages: shareGptMessages(row[format.field], format.field, where) };
    case "prompt_completion":
      if (format.conversational) {
        return {
          kind: "prompt_completion_chat",
          prompt: chatMessages(row.prompt, "prompt", where),
          completion: chatMessages(row.completion, "completion", where),
        };
      }
      return { kind: "prompt_completion", prompt: stringColumn(row, "prompt", where), completion: stringColumn(row, "completion", where) };
    case "alpaca": {
      const input = row.input;
      if (input !== null && input !== undefined && typeof input !== "string") throw bad(where, `column "input" must be a string, got ${describe(input)}`);
      const prompt = alpacaPrompt(stringColumn(row, "instruction", where), input ?? "");
      return { kind: "prompt_completion", prompt, completion: stringColumn(row, "output", where) };
    }
    case "tokens": {
      const inputIds = tokenIds(row.input_ids, "input_ids", where);
      if (inputIds.length === 0) throw bad(where, `column "input_ids" is empty`);
      if (row.labels === null || row.labels === undefined) return { kind: "tokens", inputIds };
      const labels = tokenIds(row.labels, "labels", where);
      if (labels.length !== inputIds.length) throw bad(where, `"labels" has ${labels.length} entries but "input_ids" has ${inputIds.length}; they must match`);
      return { kind: "tokens", inputIds, labels };
    }
  }
}
