// Preference pairs as TRL 1.13 prepares them: text and conversational rows, prompts implicit in the shared start,
// the chat template applied, TRL 1.13's tokenization (test/train/dpo/trainer-golden.test.ts compares whole runs
// with TRL itself), the truncation rules, and bad rows named (or skipped and counted).
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setupChatFormat } from "../../src/data/chat-format.ts";
import { preferenceText, preparePreferenceSplits, tokenizePair, type PreferenceOptions } from "../../src/data/preference.ts";
import { renderChatTemplate } from "../../src/tokenizer/chat-template.ts";
import { loadTokenizer, type LoadedTokenizer } from "../../src/tokenizer/load.ts";
import { isTunaError } from "../../src/util/errors.ts";

const TINY = resolve(import.meta.dirname, "../../examples/tiny-llama");
let tok: LoadedTokenizer;
let template: string;
before(async () => {
  const chat = setupChatFormat(await loadTokenizer(TINY), "chatml", 32000);
  tok = chat.tokenizer;
  template = chat.template!;
});

const NO_LIMITS: PreferenceOptions = { maxPromptLength: null, maxCompletionLength: null, maxLength: null, truncationMode: "keep_end", dropLong: false, skipBad: false };

void test("text rows: the prompt as given, or the shared start of chosen and rejected (stopping before a space)", () => {
  assert.deepEqual(preferenceText({ prompt: "The sky is", chosen: " blue.", rejected: " green." }, "r1", tok, template), { prompt: "The sky is", chosen: " blue.", rejected: " green." });
  assert.deepEqual(preferenceText({ chosen: "The sky is blue.", rejected: "The sky is green." }, "r2", tok, template), { prompt: "The sky is", chosen: " blue.", rejected: " green." });
});

void test("conversations: the prompt with the generation prompt, each completion as the rest of prompt + completion", () => {
  const prompt = [{ role: "user", content: "reverse: a b" }];
  const t = preferenceText({ prompt, chosen: [{ role: "assistant", content: "b a" }], rejected: [{ role: "assistant", content: "a b" }] }, "r", tok, template);
  assert.equal(t.prompt, renderChatTemplate(template, prompt, { addGenerationPrompt: true, ...(tok.eosToken === undefined ? {} : { eosToken: tok.eosToken }), ...(tok.bosToken === undefined ? {} : { bosToken: tok.bosToken }) }));
  assert.equal(t.prompt + t.chosen, renderChatTemplate(template, [...prompt, { role: "assistant", content: "b a" }], { ...(tok.eosToken === undefined ? {} : { eosToken: tok.eosToken }), ...(tok.bosToken === undefined ? {} : { bosToken: tok.bosToken }) }));
  assert.ok(t.chosen.startsWith("b a"), JSON.stringify(t.chosen));
  // Implicit: the shared messages are the prompt.
  const implicit = preferenceText({ chosen: [...prompt, { role: "assistant", content: "b a" }], rejected: [...prompt, { role: "assistant", content: "a b" }] }, "r", tok, template);
  assert.deepEqual(implicit, t);
});

void test("text pairs as TRL 1.13 tokenizes them: the tokenizer's special tokens (BOS), EOS text appended, each completion what prompt + completion has beyond the prompt", () => {
  const text = { prompt: "reverse the words: cat dog", chosen: " dog cat", rejected: " cat dog" };
  const { sequence, truncated } = tokenizePair(text, tok, NO_LIMITS, 3, "r");
  const p = tok.encode(text.prompt);
  assert.equal(p[0], tok.bosTokenId, "the prompt starts with BOS");
  const c = tok.encode(text.prompt + text.chosen + tok.eosToken!).slice(p.length);
  const r = tok.encode(text.prompt + text.rejected + tok.eosToken!).slice(p.length);
  assert.equal(c.at(-1), tok.eosTokenId);
  assert.equal(truncated, false);
  assert.deepEqual(sequence.docLengths, [p.length + c.length, p.length + r.length]);
  assert.deepEqual([...sequence.inputIds], [...p, ...c, ...p, ...r]);
  assert.deepEqual([...sequence.trained], [...p.map(() => 0), ...c.map(() => 1), ...p.map(() => 0), ...r.map(() => 1)]);
  assert.deepEqual(sequence.rows, [3, 3]);
  // A completion that already ends with EOS gets no second one.
  const ended = tokenizePair({ ...text, chosen: ` dog cat${tok.eosToken!}` }, tok, NO_LIMITS, 3, "r");
  assert.deepEqual([...ended.sequence.inputIds], [...sequence.inputIds]);
});

void test("conversational pairs: the rendered prompt and whole renderings, no special tokens added and no EOS beyond the template's", () => {
  const prompt = [{ role: "user", content: "reverse: a b" }];
  const text = preferenceText({ prompt, chosen: [{ role: "assistant", content: "b a" }], rejected: [{ role: "assistant", content: "a b" }] }, "r", tok, template);
  const { sequence } = tokenizePair(text, tok, NO_LIMITS, 0, "r");
  const p = tok.encode(text.prompt, { addSpecialTokens: false });
  const c = tok.encode(text.rendered!.chosen, { addSpecialTokens: false }).slice(p.length);
  assert.notEqual(p[0], tok.bosTokenId);
  assert.notEqual(c.at(-1), tok.eosTokenId, "ChatML ends a turn with its own marker; TRL appends no EOS to conversations");
  assert.deepEqual([...sequence.inputIds.slice(0, p.length + c.length)], [...p, ...c]);
});

void test("truncation: max_prompt_length keeps the prompt's last tokens, max_completion_length a completion's first, then max_length by truncation_mode", () => {
  const text = { prompt: "one two three four five six seven eight", chosen: " alpha beta gamma delta", rejected: " epsilon" };
  const p = tok.encode(text.prompt);
  const c = tok.encode(text.prompt + text.chosen + tok.eosToken!).slice(p.length);
  const cut = tokenizePair(text, tok, { ...NO_LIMITS, maxPromptLength: 3, maxCompletionLength: 2 }, 0, "r");
  assert.equal(cut.truncated, true);
  assert.deepEqual([...cut.sequence.inputIds.slice(0, 5)], [...p.slice(-3), ...c.slice(0, 2)]);
  const end = tokenizePair(text, tok, { ...NO_LIMITS, maxLength: 4, truncationMode: "keep_end" }, 0, "r");
  assert.deepEqual([...end.sequence.inputIds.slice(0, 4)], [...p, ...c].slice(-4));
  const start = tokenizePair(text, tok, { ...NO_LIMITS, maxLength: 4, truncationMode: "keep_start" }, 0, "r");
  assert.deepEqual([...start.sequence.inputIds.slice(0, 4)], p.slice(0, 4));
});

void test("bad pairs are named with their file and line: missing column, empty or identical completions, no shared prompt, mixed kinds; skip_bad_rows counts them", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tuna-pref-"));
  const good = { prompt: "Say hi", chosen: " hi", rejected: " bye" };
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ prompt: "Say hi", chosen: " hi" }, /rows\.jsonl:2: the column "rejected" is missing/],
    [{ prompt: "Say hi", chosen: " ", rejected: " bye" }, /rows\.jsonl:2: the chosen completion is empty/],
    [{ prompt: "Say hi", chosen: " hi", rejected: " hi" }, /rows\.jsonl:2: chosen and rejected are the same/],
    [{ chosen: "hello", rejected: "world" }, /rows\.jsonl:2: there is no "prompt" column and "chosen" and "rejected" share no start/],
    [{ prompt: "Say hi", chosen: [{ role: "assistant", content: "hi" }], rejected: " bye" }, /rows\.jsonl:2: "chosen" and "rejected" must both be text or both be conversations/],
  ];
  for (const [row, message] of cases) {
    const file = join(dir, "rows.jsonl");
    await writeFile(file, `${JSON.stringify(good)}\n${JSON.stringify(row)}\n`);
    const options = { datasetName: file, splits: ["train"], testSplitRatio: 0, seed: 1, tokenizer: tok, template };
    await assert.rejects(preparePreferenceSplits({ ...options, pairs: NO_LIMITS }, () => undefined), (e: unknown) => isTunaError(e) && message.test(e.message) && /skip_bad_rows/.test(e.message));
    const skipped = await preparePreferenceSplits({ ...options, pairs: { ...NO_LIMITS, skipBad: true } }, () => undefined);
    assert.equal(skipped.get("train")!.stats.dropped, 1);
    assert.equal(skipped.get("train")!.sequences.length, 1);
  }
});

void test("over-long pairs: kept truncated and counted, or dropped and counted with drop_long_examples", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tuna-pref-long-"));
  const file = join(dir, "rows.jsonl");
  await writeFile(file, `${JSON.stringify({ prompt: "one two three four five six seven", chosen: " yes", rejected: " no" })}\n${JSON.stringify({ prompt: "hi", chosen: " yes", rejected: " no" })}\n`);
  const options = { datasetName: file, splits: ["train"], testSplitRatio: 0, seed: 1, tokenizer: tok, template };
  const kept = (await preparePreferenceSplits({ ...options, pairs: { ...NO_LIMITS, maxPromptLength: 3 } }, () => undefined)).get("train")!;
  assert.equal(kept.stats.truncated, 1);
  assert.equal(kept.sequences.length, 2);
  const dropped = (await preparePreferenceSplits({ ...options, pairs: { ...NO_LIMITS, maxPromptLength: 3, dropLong: true } }, () => undefined)).get("train")!;
  assert.equal(dropped.stats.dropped, 1);
  assert.equal(dropped.sequences.length, 1);
});
