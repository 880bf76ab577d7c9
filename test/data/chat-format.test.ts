// setupChatFormat on examples/tiny-llama (Mistral's 32k sentencepiece-BPE vocab): the peft example's
// chatml / zephyr renders against hand-written strings, the added special tokens (ids, order, encode,
// decode), the embedding resize, format "none", and template files. Expected values are derived by hand.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { setupChatFormat } from "../../src/data/chat-format.ts";
import { renderChatTemplate } from "../../src/tokenizer/chat-template.ts";
import { loadTokenizer } from "../../src/tokenizer/load.ts";
import type { LoadedTokenizer } from "../../src/tokenizer/load.ts";
import { TunaError } from "../../src/util/errors.ts";

const TINY = fileURLToPath(new URL("../../examples/tiny-llama", import.meta.url));
let base: LoadedTokenizer;
let dir: string;

before(async () => {
  base = await loadTokenizer(TINY);
  dir = await mkdtemp(join(tmpdir(), "tuna-chat-format-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const TWO_TURNS = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Hi" },
  { role: "assistant", content: "Hello there" },
  { role: "user", content: "Thanks" },
  { role: "assistant", content: "Bye" },
];

// Base-vocab id of a piece, asserting it exists (the expectations below are written as piece strings).
function id(tokenizer: LoadedTokenizer, piece: string): number {
  const found = tokenizer.tokenToId(piece);
  assert.notEqual(found, undefined, `${piece} is not in the vocab`);
  return found!;
}

test("chatml: render of a two-turn conversation, with and without the generation prompt", () => {
  const { template, tokenizer } = setupChatFormat(base, "chatml", 32000);
  const expected =
    "<|im_start|>system\nBe brief.<|im_end|>\n" +
    "<|im_start|>user\nHi<|im_end|>\n" +
    "<|im_start|>assistant\nHello there<|im_end|>\n" +
    "<|im_start|>user\nThanks<|im_end|>\n" +
    "<|im_start|>assistant\nBye<|im_end|>\n";
  assert.equal(renderChatTemplate(template!, TWO_TURNS), expected);
  const prompt = TWO_TURNS.slice(0, 4);
  assert.equal(
    renderChatTemplate(template!, prompt, { addGenerationPrompt: true }),
    expected.slice(0, expected.lastIndexOf("<|im_start|>assistant")) + "<|im_start|>assistant\n",
  );
  assert.equal(tokenizer.chatTemplate, template);
});

test("zephyr: render of a two-turn conversation, with and without the generation prompt", () => {
  const { template, tokenizer } = setupChatFormat(base, "zephyr", 32000);
  const eos = { eosToken: tokenizer.eosToken! };
  assert.equal(tokenizer.eosToken, "</s>");
  const expected =
    "<|system|>\nBe brief.</s>\n" +
    "<|user|>\nHi</s>\n" +
    "<|assistant|>\nHello there</s>\n" +
    "<|user|>\nThanks</s>\n" +
    "<|assistant|>\nBye</s>\n";
  assert.equal(renderChatTemplate(template!, TWO_TURNS, eos), expected);
  assert.equal(
    renderChatTemplate(template!, TWO_TURNS.slice(0, 4), { ...eos, addGenerationPrompt: true }),
    "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello there</s>\n<|user|>\nThanks</s>\n<|assistant|>\n",
  );
});

test("chatml special tokens: ids after the vocab in transformers' order, bos/eos/pad, resize to 32008", () => {
  const setup = setupChatFormat(base, "chatml", 32000);
  const tok = setup.tokenizer;
  // bos <s> exists; then eos, pad, and the additional tokens in enum order (user, assistant, system).
  const expected: [string, number][] = [
    ["<|im_end|>", 32000],
    ["<pad>", 32001],
    ["<|im_start|>user", 32002],
    ["<|im_start|>assistant", 32003],
    ["<|im_start|>system", 32004],
  ];
  for (const [token, tokenId] of expected) {
    assert.equal(tok.tokenToId(token), tokenId, token);
    assert.equal(tok.idToToken(tokenId), token);
  }
  assert.deepEqual(setup.newTokenIds, [32000, 32001, 32002, 32003, 32004]);
  assert.equal(tok.size, 32005);
  assert.equal(tok.vocabSize, 32000);
  // 32005 rounded up to a multiple of 8: the seed's printed model has a 32008-row embedding.
  assert.equal(setup.resizedVocabSize, 32008);
  assert.equal(setupChatFormat(base, "chatml", 32064).resizedVocabSize, 32064);
  assert.deepEqual([tok.bosToken, tok.bosTokenId, tok.eosToken, tok.eosTokenId, tok.padToken, tok.padTokenId], [
    "<s>", 1, "<|im_end|>", 32000, "<pad>", 32001,
  ]);
  assert.equal(base.tokenToId("<|im_end|>"), undefined, "the loaded tokenizer itself is not changed");
});

test("zephyr special tokens: <pad> and the three role tokens are new, eos stays </s>", () => {
  const setup = setupChatFormat(base, "zephyr", 32000);
  assert.deepEqual(
    ["<pad>", "<|user|>", "<|assistant|>", "<|system|>"].map((t) => setup.tokenizer.tokenToId(t)),
    [32000, 32001, 32002, 32003],
  );
  assert.deepEqual(setup.newTokenIds, [32000, 32001, 32002, 32003]);
  assert.equal(setup.tokenizer.size, 32004);
  assert.equal(setup.resizedVocabSize, 32008);
  assert.equal(setup.tokenizer.eosTokenId, 2);
  // </s> is the base's own added token: the text after it decodes as its own piece, so no stray space.
  const text = "<|user|>\nHi</s>\n<|assistant|>\nHello there</s>\n";
  const encoded = setup.tokenizer.encode(text, { addSpecialTokens: false });
  assert.equal(setup.tokenizer.decode(encoded), text);
  assert.equal(setup.tokenizer.decode(encoded, { skipSpecialTokens: true }), "\nHi\n\nHello there\n");
});

test("a second setup finds the tokens already there and adds none", () => {
  const once = setupChatFormat(base, "chatml", 32000);
  const twice = setupChatFormat(once.tokenizer, "chatml", 32000);
  assert.deepEqual(twice.newTokenIds, []);
  assert.equal(twice.tokenizer.size, 32005);
  assert.equal(twice.tokenizer.tokenToId("<|im_start|>user"), 32002);
});

test("added tokens split the text, the pieces between go through the base tokenizer, decode maps back", () => {
  const tok = setupChatFormat(base, "chatml", 32000).tokenizer;
  const text = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello there<|im_end|>\n";
  // Each piece after an added token is normalized on its own: the Prepend normalizer puts "▁" first.
  const nl = [id(tok, "▁"), id(tok, "<0x0A>")];
  const expected = [
    32002, ...nl, id(tok, "Hi"), 32000, ...nl,
    32003, ...nl, id(tok, "Hello"), id(tok, "▁there"), 32000, ...nl,
  ];
  assert.deepEqual(tok.encode(text, { addSpecialTokens: false }), expected);
  assert.deepEqual(tok.encode(text), [1, ...expected], "add_bos_token puts <s> first");
  assert.equal(tok.decode(expected), text);
  assert.equal(tok.decode(expected, { skipSpecialTokens: true }), "\nHi\n\nHello there\n");
  // An added string inside a longer one matches longest first; a role the table lacks stays plain text.
  const tool = tok.encode("<|im_start|>tool", { addSpecialTokens: false });
  assert.ok(!tool.some((t) => t >= 32000), "<|im_start|>tool is not a token: only the spec's roles are");
  assert.equal(tok.decode(tool), "<|im_start|>tool");
});

test("with a Metaspace prepend_scheme 'first' tokenizer, text after an added token gets no '▁' and decodes back", async () => {
  // The same vocab, converted the non-legacy way: no Prepend normalizer, Metaspace adds "▁" to the first section only.
  const json = JSON.parse(await readFile(join(TINY, "tokenizer.json"), "utf8")) as Record<string, unknown>;
  json.normalizer = null;
  json.pre_tokenizer = { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false };
  const folder = join(dir, "metaspace-first");
  await mkdir(folder);
  await writeFile(join(folder, "tokenizer.json"), JSON.stringify(json));
  // legacy false: what transformers 5's LlamaTokenizer builds for it too (classPipeline in load.ts).
  const config = JSON.parse(await readFile(join(TINY, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
  await writeFile(join(folder, "tokenizer_config.json"), JSON.stringify({ ...config, legacy: false }));
  const tok = setupChatFormat(await loadTokenizer(folder), "chatml", 32000).tokenizer;
  const text = "Hi<|im_start|>user\nHi there<|im_end|> ok";
  const encoded = tok.encode(text, { addSpecialTokens: false });
  assert.deepEqual(encoded, [
    id(tok, "▁Hi"), 32002, id(tok, "<0x0A>"), id(tok, "Hi"), id(tok, "▁there"), 32000, id(tok, "▁ok"),
  ]);
  assert.equal(tok.decode(encoded), text);
});

test("format none: pad = eos when there is no pad, the tokenizer's own template, no resize", () => {
  const setup = setupChatFormat(base, "none", 32000);
  assert.equal(setup.tokenizer.padToken, "</s>");
  assert.equal(setup.tokenizer.padTokenId, 2);
  assert.equal(setup.template, base.chatTemplate);
  assert.ok(setup.template?.startsWith("{% for message in messages %}"));
  assert.deepEqual(setup.newTokenIds, []);
  assert.equal(setup.resizedVocabSize, 32000);
  assert.equal(setup.tokenizer.size, 32000);
});

test("a .jinja file replaces the template; missing or broken files are errors naming the path", async () => {
  const path = join(dir, "mine.jinja");
  const template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}";
  await writeFile(path, template);
  const none = setupChatFormat(base, "none", 32000, path);
  assert.equal(none.template, template);
  assert.equal(renderChatTemplate(template, TWO_TURNS.slice(1, 3)), "[user] Hi\n[assistant] Hello there\n");
  const chatml = setupChatFormat(base, "chatml", 32000, path);
  assert.equal(chatml.template, template);
  assert.equal(chatml.tokenizer.tokenToId("<|im_end|>"), 32000, "the format's tokens stay");

  const missing = join(dir, "absent.jinja");
  assert.throws(
    () => setupChatFormat(base, "none", 32000, missing),
    (e: unknown) => e instanceof TunaError && e.code === "FILE_NOT_FOUND" && e.message.includes(missing),
  );
  const broken = join(dir, "broken.jinja");
  await writeFile(broken, "{% for m in messages %}{{ m['content'] }");
  assert.throws(
    () => setupChatFormat(base, "none", 32000, broken),
    (e: unknown) => e instanceof TunaError && e.code === "CONFIG_INVALID" && e.message.includes(broken),
  );
});

test("TRL's eos_token and pad_token replace the tokenizer's (pad defaults to the new EOS); a token outside the vocabulary is refused", async () => {
  const tok = await loadTokenizer(TINY);
  assert.equal(tok.padToken, undefined, "the fixture has no pad token of its own");
  const set = setupChatFormat(tok, "none", 32000, undefined, { eosToken: "<unk>" });
  assert.equal(set.tokenizer.eosToken, "<unk>");
  assert.equal(set.tokenizer.eosTokenId, 0);
  assert.equal(set.tokenizer.padTokenId, 0, "TRL: pad_token = args.pad_token or tokenizer.pad_token or tokenizer.eos_token (the new one)");
  const both = setupChatFormat(tok, "none", 32000, undefined, { eosToken: "<unk>", padToken: "<s>" });
  assert.deepEqual([both.tokenizer.eosTokenId, both.tokenizer.padTokenId], [0, 1]);
  // A chat format's own EOS gives way to the override too.
  assert.equal(setupChatFormat(tok, "chatml", 32000, undefined, { eosToken: "</s>" }).tokenizer.eosToken, "</s>");
  assert.throws(() => setupChatFormat(tok, "none", 32000, undefined, { eosToken: "<|im_end|>" }), (e: unknown) => e instanceof TunaError && e.code === "CONFIG_INVALID" && /eos_token "<\|im_end\|>" is not a token of the tokenizer's vocabulary/.test(e.message));
});
