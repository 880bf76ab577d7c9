// The demo's chat tasks: the pretraining mix that teaches the base model ChatML and character handling,
// and the fine-tuning task (reversal) it never sees; rows in `messages` form, seeded, and as PackedSequences.
import type { PackedSequence } from "../../src/data/types.ts";
import type { LoadedTokenizer } from "../../src/tokenizer/load.ts";
import type { ChatMessage } from "../../src/tokenizer/chat-template.ts";
import { TunaError } from "../../src/util/errors.ts";
import type { Rng } from "../../src/util/random.ts";

export interface ChatRow {
  messages: ChatMessage[];
}

export interface WordTask {
  name: string;
  /** The user's request and the expected answer for one word; `rng` picks any further argument. */
  make: (word: string, rng: Rng) => { request: string; answer: string };
}

export const LETTERS = "abcdefghijklmnopqrstuvwxyz";

const simple = (name: string, answer: (w: string) => string): WordTask => ({ name, make: (w) => ({ request: `${name}: ${w}`, answer: answer(w) }) });

/** A letter of `word` that occurs once, at index >= `from` and < length - `stopBefore`; undefined when none. */
function uniqueLetterAt(word: string, rng: Rng, from: number, stopBefore: number): number | undefined {
  const candidates: number[] = [];
  for (let i = from; i < word.length - stopBefore; i++) if (word.indexOf(word[i]!) === word.lastIndexOf(word[i]!)) candidates.push(i);
  return candidates.length === 0 ? undefined : candidates[Math.floor(rng.uniform() * candidates.length)];
}

/** "before: abcde c" -> "b": the letter in front of a given one (the word's own start when none fits). */
const lookup = (name: "before" | "after"): WordTask => ({
  name,
  make: (w, rng) => {
    const i = uniqueLetterAt(w, rng, name === "before" ? 1 : 0, name === "after" ? 1 : 0) ?? (name === "before" ? 1 : 0);
    return { request: `${name}: ${w} ${w[i]!}`, answer: w[name === "before" ? i - 1 : i + 1]! };
  },
});

/** The fine-tuning task: the base model never sees the word "reverse" nor a reversed answer. */
export const REVERSE_TASK: WordTask = simple("reverse", (w) => Array.from(w).reverse().join(""));

/** Every pretraining task by name; the generator picks its mix from these. */
export const BASE_TASKS: Readonly<Record<string, WordTask>> = {
  copy: simple("copy", (w) => w),
  first: simple("first", (w) => w.slice(0, 1)),
  last: simple("last", (w) => w.slice(-1)),
  length: simple("length", (w) => String(w.length)),
  double: simple("double", (w) => Array.from(w, (c) => c + c).join("")),
  rotate: simple("rotate", (w) => w.slice(1) + w.slice(0, 1)),
  before: lookup("before"),
  after: lookup("after"),
};

export function randomWord(rng: Rng, minLength: number, maxLength: number): string {
  const n = minLength + Math.floor(rng.uniform() * (maxLength - minLength + 1));
  let w = "";
  for (let i = 0; i < n; i++) w += LETTERS[Math.floor(rng.uniform() * LETTERS.length)]!;
  return w;
}

/** `count` distinct random words, none in `exclude`. */
export function distinctWords(rng: Rng, count: number, minLength: number, maxLength: number, exclude: ReadonlySet<string> = new Set()): string[] {
  const seen = new Set<string>();
  for (let tries = 0; seen.size < count; tries++) {
    if (tries > count * 100) throw new TunaError("INTERNAL", `could not draw ${count} distinct words of ${minLength}-${maxLength} letters`);
    const w = randomWord(rng, minLength, maxLength);
    if (!exclude.has(w)) seen.add(w);
  }
  return [...seen];
}

export function taskRow(task: WordTask, word: string, rng: Rng): ChatRow {
  const { request, answer } = task.make(word, rng);
  return { messages: [{ role: "user", content: request }, { role: "assistant", content: answer }] };
}

/**
 * A user/assistant exchange in ChatML as ids, trained = 1 on the assistant's content and its <|im_end|>
 * (what the model must produce), 0 on the prompt and the template's trailing newline. Char-level
 * tokenization is compositional, so the pieces are encoded one by one and checked against the whole.
 */
export function chatToSequence(tok: LoadedTokenizer, row: ChatRow, index: number): PackedSequence {
  const [user, assistant] = row.messages;
  if (row.messages.length !== 2 || user?.role !== "user" || assistant?.role !== "assistant") {
    throw new TunaError("CONFIG_INVALID", `row ${index}: expected one user and one assistant message`);
  }
  const prompt = promptIds(tok, user.content);
  const answer = tok.encode(`${assistant.content}<|im_end|>`, { addSpecialTokens: false });
  const tail = tok.encode("\n", { addSpecialTokens: false });
  const ids = [...prompt, ...answer, ...tail];
  const trained = [...prompt.map(() => 0), ...answer.map(() => 1), ...tail.map(() => 0)];
  return { inputIds: Int32Array.from(ids), trained: Uint8Array.from(trained), docLengths: [ids.length], rows: [index] };
}

/** The ChatML prompt of one user turn with the assistant turn opened (add_generation_prompt). */
export function promptIds(tok: LoadedTokenizer, userContent: string): number[] {
  return tok.encode(`<|im_start|>user\n${userContent}<|im_end|>\n<|im_start|>assistant\n`, { addSpecialTokens: false });
}

export function toJsonl(rows: readonly ChatRow[]): string {
  return rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
}
