// The committed demo (examples/demo): the character tokenizer round-trips text and ChatML, the base
// model folder opens, fits the tokenizer and copies but cannot reverse; the dataset's splits are disjoint.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { openModelFolder } from "../../src/hf/folder.ts";
import { renderChatTemplate } from "../../src/tokenizer/chat-template.ts";
import { loadTokenizer } from "../../src/tokenizer/load.ts";
import { exactMatch } from "../../tools/demo/greedy.ts";
import { openDemoModel } from "../../tools/demo/model.ts";
import { chatToSequence, type ChatRow } from "../../tools/demo/tasks.ts";

const DEMO = new URL("../../examples/demo", import.meta.url).pathname;
const MODEL = join(DEMO, "base-model");

async function readRows(file: string): Promise<ChatRow[]> {
  const text = await readFile(join(DEMO, "data", file), "utf8");
  assert.ok(text.endsWith("\n"));
  return text
    .slice(0, -1)
    .split("\n")
    .map((line) => JSON.parse(line) as ChatRow);
}

test("the tokenizer maps every character to one token and decodes back exactly", async () => {
  const tok = await loadTokenizer(MODEL);
  const text = "reverse: abc xyz\n  two  spaces, digits 0123456789!\n\nend.";
  const ids = tok.encode(text);
  assert.equal(ids.length, text.length); // no BOS/EOS added, no merges: one id per character
  assert.equal(new Set(ids).size, new Set(text).size);
  assert.ok(!ids.includes(tok.tokenToId("<unk>")!));
  assert.equal(tok.decode(ids), text);
  // Each letter is its own token, and distinct letters are distinct tokens.
  const letters = Array.from("abcdefghijklmnopqrstuvwxyz", (c) => c).map((c) => tok.encode(c));
  for (const l of letters) assert.equal(l.length, 1);
  assert.equal(new Set(letters.map((l) => l[0])).size, 26);
  assert.equal(tok.kind, "BPE");
  assert.equal(tok.addBosToken, false);
  assert.equal(tok.addEosToken, false);
});

test("the ChatML special tokens are single ids; eos is <|im_end|>, pad is <pad>", async () => {
  const tok = await loadTokenizer(MODEL);
  const start = tok.tokenToId("<|im_start|>")!;
  const end = tok.tokenToId("<|im_end|>")!;
  assert.equal(tok.eosToken, "<|im_end|>");
  assert.equal(tok.eosTokenId, end);
  assert.equal(tok.padToken, "<pad>");
  assert.equal(tok.padTokenId, tok.tokenToId("<pad>"));
  assert.equal(tok.unkToken, "<unk>");
  const chat = "<|im_start|>user\nhi there<|im_end|>\n";
  const ids = tok.encode(chat);
  // <|im_start|>, 4 + 1 characters, 8 characters, <|im_end|>, newline
  assert.equal(ids.length, 1 + 5 + 8 + 1 + 1);
  assert.equal(ids[0], start);
  assert.equal(ids[14], end);
  assert.equal(tok.decode(ids), chat);
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), "user\nhi there\n");
});

test("the chat template is ChatML, and the demo's loss mask covers exactly the answer and its <|im_end|>", async () => {
  const tok = await loadTokenizer(MODEL);
  const row: ChatRow = { messages: [{ role: "user", content: "reverse: abc" }, { role: "assistant", content: "cba" }] };
  const rendered = renderChatTemplate(tok.chatTemplate!, row.messages);
  assert.equal(rendered, "<|im_start|>user\nreverse: abc<|im_end|>\n<|im_start|>assistant\ncba<|im_end|>\n");
  const seq = chatToSequence(tok, row, 0);
  assert.deepEqual([...seq.inputIds], tok.encode(rendered));
  const trained = [...seq.inputIds].filter((_, i) => seq.trained[i] === 1);
  assert.deepEqual(trained, tok.encode("cba<|im_end|>"));
  // The trained tokens are the last ones before the final newline.
  assert.deepEqual([...seq.trained].slice(-5), [1, 1, 1, 1, 0]);
});

test("the base model folder opens, its vocabulary fits the tokenizer and it stops at <|im_end|>", async () => {
  const tok = await loadTokenizer(MODEL);
  const folder = await openModelFolder(MODEL);
  try {
    const cfg = folder.config;
    assert.equal(cfg.modelType, "llama");
    assert.ok(cfg.vocabSize >= tok.size, `vocab ${cfg.vocabSize} < tokenizer size ${tok.size}`);
    assert.equal(cfg.vocabSize % 8, 0);
    assert.ok(cfg.vocabSize - tok.size < 8);
    assert.equal(cfg.tieWordEmbeddings, true);
    assert.deepEqual(folder.weightCheck.unexpected, []);
    assert.deepEqual(folder.generationConfig?.eosTokenIds, [tok.eosTokenId]);
    assert.deepEqual(cfg.eosTokenIds, [tok.eosTokenId]);
    assert.equal(cfg.padTokenId, tok.padTokenId);
  } finally {
    await folder.weights.close();
  }
  const bytes = (await stat(join(MODEL, "model.safetensors"))).size;
  assert.ok(bytes < 2 * 1024 * 1024, `model.safetensors is ${bytes} bytes`);
});

test("the reversal dataset parses, answers are the reversed words, and train/test prompts do not overlap", async () => {
  const train = await readRows("train.jsonl");
  const held = await readRows("test.jsonl");
  assert.ok(train.length >= 400 && train.length <= 2000, `${train.length} train rows`);
  assert.ok(held.length >= 50 && held.length <= 100, `${held.length} test rows`);
  for (const row of [...train, ...held]) {
    assert.equal(row.messages.length, 2);
    const [user, assistant] = row.messages;
    assert.ok(user !== undefined && assistant !== undefined);
    assert.equal(user.role, "user");
    assert.equal(assistant.role, "assistant");
    const match = /^reverse: ([a-z]{3,8})$/.exec(user.content);
    assert.ok(match, user.content);
    let reversed = "";
    for (const c of match[1]!) reversed = c + reversed;
    assert.equal(assistant.content, reversed);
  }
  const trainPrompts = new Set(train.map((r) => r.messages[0]!.content));
  assert.equal(trainPrompts.size, train.length);
  const overlap = held.filter((r) => trainPrompts.has(r.messages[0]!.content));
  assert.deepEqual(overlap, []);
  assert.equal(new Set(held.map((r) => r.messages[0]!.content)).size, held.length);
});

test("the committed base model copies unseen words but cannot reverse them", async () => {
  const tok = await loadTokenizer(MODEL);
  const { model } = await openDemoModel(MODEL, { mode: "full" });
  const words = (await readRows("test.jsonl")).slice(0, 20).map((r) => /^reverse: (\w+)$/.exec(r.messages[0]!.content)![1]!);
  const ask = (request: (w: string) => string, answer: (w: string) => string): ChatRow[] =>
    words.map((w) => ({ messages: [{ role: "user", content: request(w) }, { role: "assistant", content: answer(w) }] }));
  const copy = await exactMatch(model, tok, ask((w) => `copy: ${w}`, (w) => w));
  assert.ok(copy.accuracy >= 0.9, `copy accuracy ${copy.accuracy}: ${JSON.stringify(copy.answers.slice(0, 3))}`);
  const first = await exactMatch(model, tok, ask((w) => `first: ${w}`, (w) => w.charAt(0)));
  assert.ok(first.accuracy >= 0.9, `first-letter accuracy ${first.accuracy}`);
  const reversed = await exactMatch(model, tok, ask((w) => `reverse: ${w}`, (w) => Array.from(w).reverse().join("")));
  assert.ok(reversed.accuracy <= 0.1, `reverse accuracy ${reversed.accuracy}`);
});
