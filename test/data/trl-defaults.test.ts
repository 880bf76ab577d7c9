// TRL's data defaults through tuna train's configuration: with no flag, a plain-text example and a
// prompt/completion example end with EOS (TRL's add_eos for every non-conversational dataset), a conversation
// gets none beyond what its template writes, and the completion alone is trained (completion_only_loss);
// --append_concat_token False (the seed workflow's setting) appends nothing.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { resolve } from "node:path";
import { parseTrainArgs } from "../../src/config/index.ts";
import { setupChatFormat } from "../../src/data/chat-format.ts";
import { tokenizeExample } from "../../src/data/tokenize.ts";
import { trainPrepareOptions } from "../../src/data/train-options.ts";
import type { Example } from "../../src/data/types.ts";
import { loadTokenizer, type LoadedTokenizer } from "../../src/tokenizer/load.ts";

const TINY = resolve(import.meta.dirname, "../../examples/tiny-llama");
let tok: LoadedTokenizer;
let template: string;
before(async () => {
  const chat = setupChatFormat(await loadTokenizer(TINY), "chatml", 32000);
  tok = chat.tokenizer;
  template = chat.template!;
});

async function tokenized(example: Example, flags: string[] = []): Promise<{ ids: number[]; trained: number[] }> {
  const c = (await parseTrainArgs(["--model_name_or_path", TINY, "--dataset_name", "x", ...flags])).config;
  const options = trainPrepareOptions(c, { dir: TINY, vocabSize: 32000, modelType: "llama" }).recipe.options;
  const t = tokenizeExample(example, { ...options, tokenizer: tok, template, row: 0 });
  return { ids: [...t.inputIds], trained: [...t.trained] };
}

void test("plain text ends with EOS by default, as TRL appends it; --append_concat_token False appends none", async () => {
  const eos = tok.eosTokenId!;
  const plain = await tokenized({ kind: "text", text: "the sky is blue" });
  assert.equal(plain.ids.at(-1), eos);
  assert.deepEqual(plain.ids.slice(0, -1), tok.encode("the sky is blue", { addSpecialTokens: false }));
  const seed = await tokenized({ kind: "text", text: "the sky is blue" }, ["--append_concat_token", "False"]);
  assert.deepEqual(seed.ids, tok.encode("the sky is blue", { addSpecialTokens: false }));
});

void test("prompt/completion: the completion ends with EOS and alone is trained, by default", async () => {
  const eos = tok.eosTokenId!;
  const pc = await tokenized({ kind: "prompt_completion", prompt: "Q: sky? A:", completion: " blue" });
  assert.equal(pc.ids.at(-1), eos);
  assert.equal(pc.trained.at(-1), 1, "the EOS is trained: the model learns to stop");
  assert.equal(pc.trained[0], 0, "the prompt is not trained");
});

void test("conversations get no EOS beyond their template's own end-of-turn tokens", async () => {
  const chat = await tokenized({ kind: "conversation", messages: [{ role: "user", content: "hi" }, { role: "assistant", content: "hello" }] }, ["--chat_template_format", "chatml"]);
  const rendered = tok.encode(
    template.length > 0 ? (await import("../../src/tokenizer/chat-template.ts")).renderChatTemplate(template, [{ role: "user", content: "hi" }, { role: "assistant", content: "hello" }], { eosToken: tok.eosToken!, ...(tok.bosToken === undefined ? {} : { bosToken: tok.bosToken }) }) : "",
    { addSpecialTokens: false },
  );
  assert.deepEqual(chat.ids, rendered);
});
