import { test } from "node:test";
import assert from "node:assert/strict";
import { detectFormat, formatOrigin, toExample } from "../../src/data/formats.ts";
import type { DatasetFormat, Row, RowOrigin } from "../../src/data/types.ts";
import { TunaError } from "../../src/util/errors.ts";

const text = { datasetTextField: "text" };
const at: RowOrigin = { file: "data/train.jsonl", line: 17 };

function rejects(code: string, pattern: RegExp) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof TunaError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, pattern);
    return true;
  };
}

test("detectFormat: each format from its columns", () => {
  const cases: [string[], Row[], DatasetFormat][] = [
    [["input_ids", "labels", "text"], [], { kind: "tokens" }],
    [["messages", "text"], [{ messages: [{ role: "user", content: "hi" }] }], { kind: "messages", field: "messages" }],
    [["messages"], [{ messages: [{ from: "human", value: "hi" }] }], { kind: "sharegpt", field: "messages" }],
    [["conversations"], [{ conversations: [{ from: "human", value: "hi" }] }], { kind: "sharegpt", field: "conversations" }],
    [["conversations"], [{ conversations: [{ role: "user", content: "hi" }] }], { kind: "messages", field: "conversations" }],
    [["prompt", "completion"], [{ prompt: "a", completion: "b" }], { kind: "prompt_completion", conversational: false }],
    [
      ["prompt", "completion"],
      [{ prompt: [{ role: "user", content: "a" }], completion: [{ role: "assistant", content: "b" }] }],
      { kind: "prompt_completion", conversational: true },
    ],
    [["instruction", "input", "output"], [], { kind: "alpaca" }],
    [["id", "text"], [], { kind: "text", field: "text" }],
  ];
  for (const [columns, rows, want] of cases) assert.deepEqual(detectFormat(columns, rows, text), want, columns.join(","));
  assert.deepEqual(detectFormat(["content"], [], { datasetTextField: "content" }), { kind: "text", field: "content" });
});

test("detectFormat: an explicit format wins and is checked against the columns", () => {
  const columns = ["messages", "text"];
  assert.deepEqual(detectFormat(columns, [], { datasetTextField: "text", format: "text" }), { kind: "text", field: "text" });
  assert.deepEqual(detectFormat(["input_ids", "prompt", "completion"], [], { ...text, format: "prompt_completion" }), {
    kind: "prompt_completion",
    conversational: false,
  });
  assert.throws(() => detectFormat(columns, [], { ...text, format: "alpaca" }), rejects("CONFIG_INVALID", /"alpaca" needs the columns "instruction", "output"/));
  assert.throws(() => detectFormat(["text"], [], { ...text, format: "sharegpt" }), rejects("CONFIG_INVALID", /"sharegpt" needs the column "conversations"/));
  assert.throws(() => detectFormat(["text"], [], { datasetTextField: "body", format: "text" }), rejects("CONFIG_INVALID", /needs the column "body"/));
});

test("detectFormat: no format fits -> the columns, what each format needs, and the text-field hint", () => {
  assert.throws(
    () => detectFormat(["content", "n"], [{ content: "hello", n: 3 }], text),
    (e: unknown) => {
      assert.ok(e instanceof TunaError && e.code === "CONFIG_INVALID");
      assert.match(e.message, /from its columns \(content, n\)/);
      for (const kind of ["text", "messages", "sharegpt", "prompt_completion", "alpaca", "tokens"]) assert.match(e.message, new RegExp(`\\n  ${kind}: `));
      assert.match(e.message, /now "text"/);
      assert.match(e.message, /--dataset_text_field content\./);
      return true;
    },
  );
});

test("formatOrigin: file:line for text formats, file row N for columnar ones", () => {
  assert.equal(formatOrigin(at), "data/train.jsonl:17");
  assert.equal(formatOrigin({ file: "train-00000-of-00001.parquet", row: 3 }), "train-00000-of-00001.parquet row 3");
});

test("toExample: text, and a wrong type names file:line and column", () => {
  assert.deepEqual(toExample({ text: "hi" }, { kind: "text", field: "text" }, at), { kind: "text", text: "hi" });
  assert.throws(
    () => toExample({ text: 5 }, { kind: "text", field: "text" }, at),
    rejects("FILE_FORMAT", /^data\/train\.jsonl:17: column "text" must be a string, got a number/),
  );
});

test("toExample: messages keep extra fields, join text parts, drop struct nulls, and check types", () => {
  const format: DatasetFormat = { kind: "messages", field: "messages" };
  const row = {
    messages: [
      { role: "system", content: "be brief", name: null },
      { role: "user", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }] },
      { role: "assistant", content: null, tool_calls: [{ id: "1" }] },
    ],
  };
  assert.deepEqual(toExample(row, format, at), {
    kind: "conversation",
    messages: [
      { role: "system", content: "be brief" },
      { role: "user", content: "ab" },
      { role: "assistant", content: "", tool_calls: [{ id: "1" }] },
    ],
  });
  assert.throws(() => toExample({ messages: [{ role: "user", content: 3 }] }, format, at), rejects("FILE_FORMAT", /:17: messages\[0\]\.content must be a string/));
  assert.throws(
    () => toExample({ messages: [{ role: "user", content: [{ type: "image", url: "x" }] }] }, format, at),
    rejects("FILE_FORMAT", /messages\[0\]\.content\[0\] is "image"/),
  );
  assert.throws(() => toExample({ messages: [] }, format, at), rejects("FILE_FORMAT", /non-empty list.*got an empty list/));
  assert.throws(() => toExample({ messages: [{ content: "x" }] }, format, at), rejects("FILE_FORMAT", /messages\[0\]\.role must be a non-empty string/));
});

test("toExample: sharegpt roles map to chat roles; an unknown role lists the allowed ones", () => {
  const format: DatasetFormat = { kind: "sharegpt", field: "conversations" };
  const turns = [
    { from: "system", value: "s" },
    { from: "human", value: "h" },
    { from: "gpt", value: "g" },
    { from: "user", value: "u" },
    { from: "assistant", value: "a" },
    { from: "bot", value: "b" },
  ];
  assert.deepEqual(toExample({ conversations: turns }, format, at), {
    kind: "conversation",
    messages: [
      { role: "system", content: "s" },
      { role: "user", content: "h" },
      { role: "assistant", content: "g" },
      { role: "user", content: "u" },
      { role: "assistant", content: "a" },
      { role: "assistant", content: "b" },
    ],
  });
  assert.throws(
    () => toExample({ conversations: [{ from: "narrator", value: "x" }] }, format, { file: "c.parquet", row: 4 }),
    rejects("FILE_FORMAT", /^c\.parquet row 4: conversations\[0\]\.from is "narrator"; allowed: human, user, gpt, assistant, bot, system/),
  );
  assert.throws(() => toExample({ conversations: [{ from: "gpt", value: 1 }] }, format, at), rejects("FILE_FORMAT", /conversations\[0\]\.value must be a string/));
});

test("toExample: alpaca becomes prompt/completion with the Stanford Alpaca prompts", () => {
  const withInput =
    "Below is an instruction that describes a task, paired with an input that provides further context. " +
    "Write a response that appropriately completes the request.\n\n### Instruction:\nTranslate\n\n### Input:\nhola\n\n### Response:\n";
  const noInput =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n" +
    "### Instruction:\nSay hi\n\n### Response:\n";
  assert.deepEqual(toExample({ instruction: "Translate", input: "hola", output: "hello" }, { kind: "alpaca" }, at), {
    kind: "prompt_completion",
    prompt: withInput,
    completion: "hello",
  });
  for (const input of ["", null, undefined]) {
    assert.deepEqual(toExample({ instruction: "Say hi", input, output: "hi" }, { kind: "alpaca" }, at), {
      kind: "prompt_completion",
      prompt: noInput,
      completion: "hi",
    });
  }
  assert.throws(() => toExample({ instruction: "x", output: 2 }, { kind: "alpaca" }, at), rejects("FILE_FORMAT", /column "output" must be a string/));
});

test("toExample: prompt/completion, plain and conversational", () => {
  assert.deepEqual(toExample({ prompt: "p", completion: "c" }, { kind: "prompt_completion", conversational: false }, at), {
    kind: "prompt_completion",
    prompt: "p",
    completion: "c",
  });
  const chat = { prompt: [{ role: "user", content: "p" }], completion: [{ role: "assistant", content: "c" }] };
  assert.deepEqual(toExample(chat, { kind: "prompt_completion", conversational: true }, at), {
    kind: "prompt_completion_chat",
    prompt: [{ role: "user", content: "p" }],
    completion: [{ role: "assistant", content: "c" }],
  });
  assert.throws(
    () => toExample({ prompt: "p", completion: chat.completion }, { kind: "prompt_completion", conversational: true }, at),
    rejects("FILE_FORMAT", /column "prompt" must be a non-empty list/),
  );
});

test("toExample: tokens with optional labels of the same length", () => {
  assert.deepEqual(toExample({ input_ids: [1, 2], labels: null }, { kind: "tokens" }, at), { kind: "tokens", inputIds: [1, 2] });
  assert.deepEqual(toExample({ input_ids: [1, 2], labels: [-100, 2] }, { kind: "tokens" }, at), { kind: "tokens", inputIds: [1, 2], labels: [-100, 2] });
  assert.throws(() => toExample({ input_ids: [1, 2], labels: [1] }, { kind: "tokens" }, at), rejects("FILE_FORMAT", /"labels" has 1 entries but "input_ids" has 2/));
  assert.throws(() => toExample({ input_ids: [1.5] }, { kind: "tokens" }, at), rejects("FILE_FORMAT", /integer token ids/));
});
