// tokenizeExample on plain text, prompt/completion and pre-tokenized rows with examples/tiny-llama: EOS
// appending, BOS from add_special_tokens, completion-only masks, the prefix-boundary fallback, truncation
// both ways, and the errors. Expected ids are written from vocab pieces by hand.

import { before, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { tokenizeExample } from "../../src/data/tokenize.ts";
import type { TokenizeContext } from "../../src/data/tokenize.ts";
import { loadTokenizer } from "../../src/tokenizer/load.ts";
import type { LoadedTokenizer } from "../../src/tokenizer/load.ts";
import { TunaError } from "../../src/util/errors.ts";

const TINY = fileURLToPath(new URL("../../examples/tiny-llama", import.meta.url));
let tok: LoadedTokenizer;

before(async () => {
  tok = await loadTokenizer(TINY);
});

function ctx(over: Partial<TokenizeContext> = {}): TokenizeContext {
  return {
    tokenizer: tok,
    maxLength: 1024,
    addSpecialTokens: true,
    appendConcatToken: true,
    assistantOnlyLoss: false,
    completionOnlyLoss: undefined,
    truncation: "keep_start",
    row: 0,
    ...over,
  };
}

const ids = (...pieces: string[]): number[] =>
  pieces.map((p) => {
    const id = tok.tokenToId(p);
    assert.notEqual(id, undefined, `${p} is not in the vocab`);
    return id!;
  });

const plain = (out: { inputIds: Int32Array; trained: Uint8Array }): { ids: number[]; trained: number[] } => ({
  ids: Array.from(out.inputIds),
  trained: Array.from(out.trained),
});

test("text: <s> from the post-processor, </s> appended, every token trained", () => {
  const out = tokenizeExample({ kind: "text", text: "Hello there" }, ctx());
  assert.deepEqual(plain(out), { ids: [1, ...ids("▁Hello", "▁there"), 2], trained: [1, 1, 1, 1] });
  assert.equal(out.truncatedTokens, 0);
});

test("text: an EOS already there is not doubled; append_concat_token false appends none", () => {
  const eosAlready = tokenizeExample({ kind: "text", text: "Hello there</s>" }, ctx());
  assert.deepEqual(plain(eosAlready).ids, [1, ...ids("▁Hello", "▁there"), 2]);
  const noEos = tokenizeExample({ kind: "text", text: "Hello there" }, ctx({ appendConcatToken: false }));
  assert.deepEqual(plain(noEos).ids, [1, ...ids("▁Hello", "▁there")]);
  const noSpecials = tokenizeExample({ kind: "text", text: "Hello there" }, ctx({ addSpecialTokens: false }));
  assert.deepEqual(plain(noSpecials).ids, [...ids("▁Hello", "▁there"), 2]);
  // A text that starts with <s> gets no second BOS.
  const bosAlready = tokenizeExample({ kind: "text", text: "<s>Hello" }, ctx());
  assert.deepEqual(plain(bosAlready).ids, [1, ...ids("▁Hello"), 2]);
});

test("prompt/completion: only the completion and its EOS are trained by default", () => {
  const example = { kind: "prompt_completion" as const, prompt: "Question: Hi Answer:", completion: " Hello there" };
  // Question: Hi Answer:[ Hello there</s>]
  const prompt = ids("▁Question", ":", "▁Hi", "▁Answer", ":");
  const completion = [...ids("▁Hello", "▁there"), 2];
  const counters = { boundaryFallbacks: 0 };
  const out = tokenizeExample(example, ctx({ counters }));
  assert.deepEqual(plain(out), {
    ids: [1, ...prompt, ...completion],
    trained: [0, ...prompt.map(() => 0), ...completion.map(() => 1)],
  });
  assert.equal(counters.boundaryFallbacks, 0);
  const all = tokenizeExample(example, ctx({ completionOnlyLoss: false }));
  assert.deepEqual(plain(all).trained, [1, ...prompt.map(() => 1), ...completion.map(() => 1)]);
});

test("prompt/completion split mid-word: prompt ids are no prefix, so the parts are tokenized apart and counted", () => {
  // "...is Par" + "is." tokenizes as ▁Paris in one piece; TRL's prefix check fails here.
  const counters = { boundaryFallbacks: 0 };
  const out = tokenizeExample({ kind: "prompt_completion", prompt: "The capital of France is Par", completion: "is." }, ctx({ counters }));
  const prompt = ids("▁The", "▁capital", "▁of", "▁France", "▁is", "▁Par");
  // The completion alone is a text of its own: the normalizer starts it with "▁".
  const completion = [...ids("▁is", "."), 2];
  assert.deepEqual(plain(out), {
    ids: [1, ...prompt, ...completion],
    trained: [0, ...prompt.map(() => 0), 1, 1, 1],
  });
  assert.equal(counters.boundaryFallbacks, 1);
  // Without a mask to place there is nothing to split: one tokenization, ▁Paris.
  const whole = tokenizeExample(
    { kind: "prompt_completion", prompt: "The capital of France is Par", completion: "is." },
    ctx({ completionOnlyLoss: false, counters }),
  );
  assert.deepEqual(plain(whole).ids, [1, ...ids("▁The", "▁capital", "▁of", "▁France", "▁is", "▁Paris", "."), 2]);
  assert.equal(counters.boundaryFallbacks, 1);
});

test("truncation keeps the start or the end and reports what was cut", () => {
  const example = { kind: "prompt_completion" as const, prompt: "Question: Hi Answer:", completion: " Hello there" };
  const full = plain(tokenizeExample(example, ctx()));
  // <s> ▁Question : ▁Hi ▁Answer : | ▁Hello ▁there </s>
  assert.deepEqual(full.trained, [0, 0, 0, 0, 0, 0, 1, 1, 1]);
  const start = tokenizeExample(example, ctx({ maxLength: 4 }));
  assert.deepEqual(plain(start), { ids: full.ids.slice(0, 4), trained: [0, 0, 0, 0] });
  assert.equal(start.truncatedTokens, 5);
  const end = tokenizeExample(example, ctx({ maxLength: 4, truncation: "keep_end" }));
  assert.deepEqual(plain(end), { ids: full.ids.slice(5), trained: [0, 1, 1, 1] });
  assert.equal(end.truncatedTokens, 5);
  assert.equal(tokenizeExample(example, ctx({ maxLength: 9 })).truncatedTokens, 0);
});

test("tokens pass through: labels -100 are untrained, missing labels train everything, truncation applies", () => {
  const out = tokenizeExample({ kind: "tokens", inputIds: [1, 5, 6, 7, 2], labels: [-100, -100, 6, 7, 2] }, ctx({ row: 3 }));
  assert.deepEqual(plain(out), { ids: [1, 5, 6, 7, 2], trained: [0, 0, 1, 1, 1] });
  assert.equal(out.row, 3);
  const noLabels = tokenizeExample({ kind: "tokens", inputIds: [1, 5, 6] }, ctx({ maxLength: 2, truncation: "keep_end" }));
  assert.deepEqual(plain(noLabels), { ids: [5, 6], trained: [1, 1] });
  assert.equal(noLabels.truncatedTokens, 1);
});

test("tokens: labels of another length or another token are errors naming the row", () => {
  assert.throws(
    () => tokenizeExample({ kind: "tokens", inputIds: [1, 5], labels: [5] }, ctx({ row: 8 })),
    (e: unknown) => e instanceof TunaError && e.code === "FILE_FORMAT" && /row 8/.test(e.message),
  );
  assert.throws(
    () => tokenizeExample({ kind: "tokens", inputIds: [1, 5], labels: [-100, 6] }, ctx({ row: 8 })),
    (e: unknown) => e instanceof TunaError && e.code === "FILE_FORMAT" && /labels\[1\] = 6/.test(e.message),
  );
});

test("assistant_only_loss on plain text is a configuration error", () => {
  for (const example of [
    { kind: "text" as const, text: "Hello" },
    { kind: "prompt_completion" as const, prompt: "a", completion: "b" },
  ]) {
    assert.throws(
      () => tokenizeExample(example, ctx({ assistantOnlyLoss: true, row: 2 })),
      (e: unknown) => e instanceof TunaError && e.code === "CONFIG_INVALID" && /row 2/.test(e.message),
    );
  }
});

test("a row far longer than max_length is cut before tokenizing; the kept tokens are those of the whole text", () => {
  // 40,000 words (~240k characters, past the 2 * 64 * 256 character cap) of varied text.
  const words = Array.from({ length: 40_000 }, (_, i) => ["alpha", "beta", "gamma", "delta", "epsilon"][i % 5]! + String(i % 97));
  const text = words.join(" ");
  const whole = tok.encode(text, { addSpecialTokens: false });
  assert.ok(text.length > 2 * 64 * 256);
  const start = tokenizeExample({ kind: "text", text }, ctx({ maxLength: 64, addSpecialTokens: false, appendConcatToken: false }));
  assert.deepEqual(Array.from(start.inputIds), whole.slice(0, 64));
  assert.ok(start.truncatedTokens > 0);
  const end = tokenizeExample({ kind: "text", text }, ctx({ maxLength: 64, addSpecialTokens: false, appendConcatToken: false, truncation: "keep_end" }));
  assert.deepEqual(Array.from(end.inputIds), whole.slice(-64));
  // A conversation with one huge message: the same tokens as without the cut.
  const messages = [
    { role: "user", content: text },
    { role: "assistant", content: "ok" },
  ];
  const template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}";
  const chat = tokenizeExample({ kind: "conversation", messages }, ctx({ maxLength: 64, addSpecialTokens: false, appendConcatToken: false, template }));
  assert.deepEqual(Array.from(chat.inputIds), tok.encode(`<|user|>${text}<|assistant|>ok`, { addSpecialTokens: false }).slice(0, 64));
});
