// Preference pairs as TRL 1.13's DPOTrainer prepares them (_prepare_dataset, checked against it in
// test/golden/dpo-trainer): rows with prompt / chosen / rejected (plain text, or conversations: lists of
// messages), the prompt implicit in chosen and rejected's shared start when there is no prompt column
// (extract_prompt). Plain text: EOS appended to each completion's text, then the prompt and prompt + completion
// tokenized with the tokenizer's own special tokens (BOS); conversations: the prompt rendered with the generation
// prompt and prompt + completion rendered whole, tokenized without special tokens (the template has them). Each
// completion is what prompt + completion has beyond the prompt's tokens. Older TRL's max_prompt_length (the
// prompt's last tokens) and max_completion_length (a completion's first) apply when set; then prompt + completion
// is cut to max_length (keep_start: the first tokens, TRL's only mode; keep_end: the last). A pair becomes one
// sequence of two documents, chosen then rejected, whose completion tokens are trained.
import { renderChatTemplate, type ChatMessage } from "../tokenizer/chat-template.ts";
import type { LoadedTokenizer } from "../tokenizer/load.ts";
import { TunaError, isTunaError } from "../util/errors.ts";
import { chatMessages, formatOrigin } from "./formats.ts";
import { loadDataset } from "./sources/load.ts";
import { templateVariables } from "./tokenize.ts";
import type { PackedSequence, Row, RowOrigin, SplitStats } from "./types.ts";

/** A row as text: the prompt and the two completions, after the chat template for conversations. */
export interface PreferenceText {
  /** The prompt (a conversation's rendered with the generation prompt). */
  prompt: string;
  /** The completions: a conversation's are what its whole rendering adds to the prompt's. */
  chosen: string;
  rejected: string;
  /** A conversation's whole renderings (prompt + completion), which TRL tokenizes; absent for text rows. */
  rendered?: { chosen: string; rejected: string };
}

export interface PreferenceOptions {
  maxPromptLength: number | null;
  maxCompletionLength: number | null;
  maxLength: number | null;
  truncationMode: "keep_start" | "keep_end";
  /** Drop a pair whose prompt or sequences were cut, instead of keeping what is left (counted). */
  dropLong: boolean;
  /** Skip a row that is not a usable pair (missing or empty completion, identical completions), counted. */
  skipBad: boolean;
}

function bad(where: string, problem: string): TunaError {
  return new TunaError("FILE_FORMAT", `${where}: ${problem}; fix the row, or set skip_bad_rows to skip such rows (they are counted).`);
}

type Part = string | ChatMessage[];

/** TRL's extract_prompt: the longest shared start of chosen and rejected (a text prompt stops before a space). */
function extractPrompt<T extends Part>(chosen: T, rejected: T): { prompt: T; chosen: T; rejected: T } {
  let idx = 0;
  const n = Math.min(chosen.length, rejected.length);
  const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
  while (idx < n && same(chosen[idx], rejected[idx])) idx++;
  if (idx < n && typeof chosen === "string" && idx > 0 && chosen[idx - 1] === " ") idx--;
  return { prompt: chosen.slice(0, idx) as T, chosen: chosen.slice(idx) as T, rejected: rejected.slice(idx) as T };
}

function part(row: Row, column: string, where: string): Part {
  const value = row[column];
  if (value === undefined || value === null) throw bad(where, `the column "${column}" is missing`);
  if (typeof value === "string") return value;
  if (Array.isArray(value)) return chatMessages(value, column, where);
  throw bad(where, `column "${column}" must be text or a list of {role, content} messages`);
}

/** One row to text, rendering conversations through `template` as TRL's maybe_apply_chat_template does. */
export function preferenceText(row: Row, where: string, tokenizer: LoadedTokenizer, template: string | undefined): PreferenceText {
  let chosen = part(row, "chosen", where);
  let rejected = part(row, "rejected", where);
  let prompt: Part;
  if (typeof chosen !== typeof rejected) throw bad(where, `"chosen" and "rejected" must both be text or both be conversations`);
  if (row.prompt === undefined || row.prompt === null) {
    const split = extractPrompt<Part>(chosen, rejected);
    if (split.prompt.length === 0) throw bad(where, `there is no "prompt" column and "chosen" and "rejected" share no start to take the prompt from`);
    ({ prompt, chosen, rejected } = split);
  } else {
    prompt = part(row, "prompt", where);
  }
  if (typeof chosen === "string" && typeof rejected === "string") {
    if (typeof prompt !== "string") throw bad(where, `a conversational "prompt" needs conversational "chosen" and "rejected"`);
    return { prompt, chosen, rejected };
  }
  if (typeof prompt === "string" || typeof chosen === "string" || typeof rejected === "string") throw bad(where, `a text "prompt" needs text "chosen" and "rejected"`);
  if (template === undefined) {
    throw new TunaError("CONFIG_INVALID", `${where} is a conversation but there is no chat template: set chat_template_format (chatml or zephyr) or give a .jinja template file.`);
  }
  const variables = templateVariables(tokenizer);
  const render = (messages: ChatMessage[], addGenerationPrompt: boolean): string => {
    try {
      return renderChatTemplate(template, messages, { ...variables, addGenerationPrompt });
    } catch (e) {
      if (isTunaError(e)) throw new TunaError(e.code, `${where}: ${e.message}`, { cause: e });
      throw e;
    }
  };
  // The generation prompt opens the assistant turn after a user turn; a final assistant turn is continued.
  const promptText = render(prompt, prompt.at(-1)?.role === "user");
  const chosenText = render([...prompt, ...chosen], false);
  const rejectedText = render([...prompt, ...rejected], false);
  // The rendered prompt is cut to what prompt + completion start with (templates that add text there, as
  // TRL does); both completions must start with it.
  let shared = 0;
  while (shared < promptText.length && promptText[shared] === chosenText[shared]) shared++;
  const head = promptText.slice(0, shared);
  if (!rejectedText.startsWith(head)) throw bad(where, `the chat template renders prompt + rejected with another start than prompt + chosen, so they do not share the prompt`);
  return { prompt: promptText, chosen: chosenText.slice(shared), rejected: rejectedText.slice(shared), rendered: { chosen: chosenText, rejected: rejectedText } };
}

export interface TokenizedPair {
  sequence: PackedSequence;
  /** The prompt, or a sequence, lost tokens to a length limit. */
  truncated: boolean;
}

/** A pair's text to one sequence of two documents (prompt + chosen, prompt + rejected), completions trained. */
export function tokenizePair(text: PreferenceText, tokenizer: LoadedTokenizer, o: PreferenceOptions, row: number, where: string): TokenizedPair {
  const eos = tokenizer.eosToken;
  if (eos === undefined) throw new TunaError("CONFIG_INVALID", `the tokenizer has no eos_token to end the completions of ${where} with.`);
  // Plain text goes through the tokenizer's defaults (BOS...); a rendered conversation has its special tokens.
  const addSpecialTokens = text.rendered === undefined;
  const whole = (completion: "chosen" | "rejected"): string => {
    if (text.rendered !== undefined) return text.rendered[completion];
    const t = text[completion];
    return text.prompt + (t.endsWith(eos) ? t : t + eos);
  };
  let truncated = false;
  const promptIds = tokenizer.encode(text.prompt, { addSpecialTokens });
  let prompt = promptIds;
  if (o.maxPromptLength !== null && prompt.length > o.maxPromptLength) {
    prompt = prompt.slice(prompt.length - o.maxPromptLength);
    truncated = true;
  }
  const completion = (which: "chosen" | "rejected"): number[] => {
    // What prompt + completion has beyond the prompt's tokens (TRL slices so even where the two tokenize the
    // shared text differently).
    const ids = tokenizer.encode(whole(which), { addSpecialTokens }).slice(promptIds.length);
    if (o.maxCompletionLength !== null && ids.length > o.maxCompletionLength) {
      truncated = true;
      return ids.slice(0, o.maxCompletionLength);
    }
    return ids;
  };
  const docs = [completion("chosen"), completion("rejected")].map((c) => {
    let ids = [...prompt, ...c];
    let trained = [...new Array<number>(prompt.length).fill(0), ...new Array<number>(c.length).fill(1)];
    if (o.maxLength !== null && ids.length > o.maxLength) {
      truncated = true;
      const keep = o.truncationMode === "keep_end" ? [ids.length - o.maxLength, ids.length] : [0, o.maxLength];
      ids = ids.slice(keep[0], keep[1]);
      trained = trained.slice(keep[0], keep[1]);
    }
    return { ids, trained };
  });
  const inputIds = Int32Array.from([...docs[0]!.ids, ...docs[1]!.ids]);
  const trained = Uint8Array.from([...docs[0]!.trained, ...docs[1]!.trained]);
  return { sequence: { inputIds, trained, docLengths: [docs[0]!.ids.length, docs[1]!.ids.length], rows: [row, row] }, truncated };
}

export interface PreparedPairs {
  split: string;
  sequences: PackedSequence[];
  stats: SplitStats;
}

/** Why a row is not a usable pair, or undefined. */
function unusable(text: PreferenceText): string | undefined {
  if (text.chosen.trim() === "") return `the chosen completion is empty`;
  if (text.rejected.trim() === "") return `the rejected completion is empty`;
  if (text.chosen === text.rejected) return `chosen and rejected are the same, so the pair teaches nothing`;
  return undefined;
}

/** The pairs of each split of a dataset (every source `tuna train` reads). */
export async function preparePreferenceSplits(
  o: { datasetName: string; splits: string[]; testSplitRatio: number; seed: number; tokenizer: LoadedTokenizer; template: string | undefined; pairs: PreferenceOptions },
  onNotice: (message: string) => void,
): Promise<Map<string, PreparedPairs>> {
  const splits = await loadDataset(o.datasetName, { splits: o.splits, skipBadRows: o.pairs.skipBad, testSplitRatio: o.testSplitRatio, seed: o.seed, onNotice });
  const out = new Map<string, PreparedPairs>();
  for (const [name, rows] of splits) {
    if (rows.rows.length === 0) throw new TunaError("CONFIG_INVALID", `split "${name}" of ${o.datasetName} has no rows.`);
    const sequences: PackedSequence[] = [];
    let dropped = rows.skipped;
    let truncated = 0;
    let tokens = 0;
    let trainedTokens = 0;
    rows.rows.forEach((row, i) => {
      const where = formatOrigin(rows.origins[i] as RowOrigin);
      let text: PreferenceText;
      try {
        text = preferenceText(row, where, o.tokenizer, o.template);
        const problem = unusable(text);
        if (problem !== undefined) throw bad(where, problem);
      } catch (e) {
        if (o.pairs.skipBad && isTunaError(e) && e.code === "FILE_FORMAT") {
          dropped++;
          return;
        }
        throw e;
      }
      const pair = tokenizePair(text, o.tokenizer, o.pairs, i, where);
      // A completion cut away entirely (keep_start, a prompt as long as max_length) has no log-probability.
      const [first, second] = pair.sequence.docLengths as [number, number];
      if (!pair.sequence.trained.subarray(1, first).includes(1) || !pair.sequence.trained.subarray(first + 1, first + second).includes(1)) {
        dropped++;
        return;
      }
      if (pair.truncated) {
        if (o.pairs.dropLong) {
          dropped++;
          return;
        }
        truncated++;
      }
      sequences.push(pair.sequence);
      tokens += pair.sequence.inputIds.length;
      for (const t of pair.sequence.trained) trainedTokens += t;
    });
    if (sequences.length === 0) throw new TunaError("CONFIG_INVALID", `split "${name}": no preference pair is left (${dropped} dropped); check the columns and the length limits.`);
    out.set(name, {
      split: name,
      sequences,
      stats: { split: name, rows: rows.rows.length + rows.skipped, dropped, truncated, tokens, trainedTokens, sequences: sequences.length, packingEfficiency: Number.NaN },
    });
  }
  return out;
}
