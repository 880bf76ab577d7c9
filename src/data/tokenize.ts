// One normalized example to token ids and its loss mask, with TRL's SFT preprocessing semantics: EOS
// appended to plain text, chat templates tokenized once, completion-only and assistant-only masks, truncation.
//
// EOS rule (appendConcatToken): plain text and the completion of prompt/completion data end with exactly
// one EOS: the eos_token string is appended when the text does not already end with it (TRL's current
// add_eos, applied to every non-conversational dataset; tuna's default). With appendConcatToken false nothing
// is appended (the seed's --append_concat_token False: TRL 0.8 packed examples without EOS between them).
// TRL 0.8's ConstantLengthDataset appended the EOS id after every example, even one already ending in EOS;
// that doubling is not reproduced. Conversations never get an EOS appended: the template ends each turn.
//
// addSpecialTokens adds what the tokenizer's post-processor adds (BOS for Llama) to text and chats alike,
// except a BOS (or EOS) the text already starts (ends) with: a template that writes <s> gets no second one.

import type { Example, TokenizedExample } from "./types.ts";
import { renderAssistantSpans, renderForRow, turnStart } from "./assistant-spans.ts";
import type { CharSpan } from "./assistant-spans.ts";
import { encodeWithCuts } from "./token-cuts.ts";
import { specialAffixes } from "../tokenizer/added-tokens.ts";
import type { ChatMessage, ChatTemplateOptions } from "../tokenizer/chat-template.ts";
import type { LoadedTokenizer } from "../tokenizer/load.ts";
import { TunaError } from "../util/errors.ts";

export interface TokenizeCounters {
  /** Examples whose mask boundary split a token, so the parts were tokenized separately. */
  boundaryFallbacks: number;
}

export interface TokenizeContext {
  tokenizer: LoadedTokenizer;
  /** The chat template for conversational examples; defaults to the tokenizer's own. */
  template?: string;
  maxLength: number;
  addSpecialTokens: boolean;
  appendConcatToken: boolean;
  /** Train only on assistant turns (conversational data). */
  assistantOnlyLoss: boolean;
  /** Train only on the completion of prompt/completion data; undefined means true (TRL's None). */
  completionOnlyLoss: boolean | undefined;
  truncation: "keep_start" | "keep_end";
  /** Index of the row in its split (kept with the tokenized example). */
  row: number;
  /** The row's origin for messages ("data/train.jsonl:17"); default "row N". */
  where?: string;
  counters?: TokenizeCounters;
}

interface Tokens {
  ids: number[];
  trained: Uint8Array;
}

function rowName(ctx: Pick<TokenizeContext, "row" | "where">): string {
  return ctx.where ?? `row ${ctx.row}`;
}

const affixCache = new WeakMap<LoadedTokenizer, { before: number[]; after: number[] }>();

function affixesOf(tokenizer: LoadedTokenizer): { before: number[]; after: number[] } {
  let affixes = affixCache.get(tokenizer);
  if (affixes === undefined) affixCache.set(tokenizer, (affixes = specialAffixes(tokenizer)));
  return affixes;
}

function startsWithIds(ids: number[], part: number[], at: number): boolean {
  return part.length > 0 && part.every((id, i) => ids[at + i] === id);
}

// The post-processor's ids around the text; before-ids are not trained unless every token is.
function addSpecials(tokens: Tokens, ctx: TokenizeContext, allTrained: boolean): Tokens {
  if (!ctx.addSpecialTokens) return tokens;
  const { before, after } = affixesOf(ctx.tokenizer);
  const lead = startsWithIds(tokens.ids, before, 0) ? [] : before;
  const tail = startsWithIds(tokens.ids, after, tokens.ids.length - after.length) ? [] : after;
  if (lead.length === 0 && tail.length === 0) return tokens;
  const trained = new Uint8Array(lead.length + tokens.ids.length + tail.length);
  trained.fill(allTrained ? 1 : 0, 0, lead.length);
  trained.set(tokens.trained, lead.length);
  trained.fill(tokens.trained.at(-1) ?? (allTrained ? 1 : 0), lead.length + tokens.ids.length);
  return { ids: [...lead, ...tokens.ids, ...tail], trained };
}

function withEos(text: string, ctx: TokenizeContext): string {
  if (!ctx.appendConcatToken) return text;
  const eos = ctx.tokenizer.eosToken;
  if (eos === undefined) {
    throw new TunaError("CONFIG_INVALID", `the tokenizer has no eos_token to append to ${rowName(ctx)}; set append_concat_token: false.`);
  }
  return text.endsWith(eos) ? text : text + eos;
}

function templateOf(ctx: TokenizeContext): string {
  const template = ctx.template ?? ctx.tokenizer.chatTemplate;
  if (template !== undefined) return template;
  throw new TunaError(
    "CONFIG_INVALID",
    `${rowName(ctx)} is a conversation but there is no chat template: none was given and the tokenizer has none. ` +
      `Set chat_template_format (chatml or zephyr) or give a .jinja template file.`,
  );
}

export function templateVariables(tokenizer: LoadedTokenizer): ChatTemplateOptions {
  const { bosToken, eosToken, padToken, unkToken } = tokenizer;
  return {
    ...(bosToken === undefined ? {} : { bosToken }),
    ...(eosToken === undefined ? {} : { eosToken }),
    ...(padToken === undefined ? {} : { padToken }),
    ...(unkToken === undefined ? {} : { unkToken }),
  };
}

function allTokens(ids: number[]): Tokens {
  return { ids, trained: new Uint8Array(ids.length).fill(1) };
}

/**
 * Tokenize `text` once and train the tokens inside `spans` (character spans; undefined = train all) and
 * from `completionFrom` on; a token straddling a span boundary sends the text through the fallback.
 */
function maskedTokens(text: string, ctx: TokenizeContext, spans: CharSpan[] | undefined, completionFrom: number | undefined): Tokens {
  const cuts = [...new Set([...(spans ?? []).flatMap((s) => [s.start, s.end]), ...(completionFrom === undefined ? [] : [completionFrom])])];
  cuts.sort((a, b) => a - b);
  const { ids, tokenCuts, segmented } = encodeWithCuts(ctx.tokenizer, text, cuts);
  if (segmented && ctx.counters !== undefined) ctx.counters.boundaryFallbacks++;
  const tokenAt = (cut: number): number => tokenCuts[cuts.indexOf(cut)]!;
  const trained = new Uint8Array(ids.length);
  if (spans === undefined) trained.fill(1);
  else for (const span of spans) trained.fill(1, tokenAt(span.start), tokenAt(span.end));
  if (completionFrom !== undefined) trained.fill(0, 0, tokenAt(completionFrom));
  return { ids, trained };
}

function assistantOnlyRequiresChat(ctx: TokenizeContext): TunaError {
  return new TunaError(
    "CONFIG_INVALID",
    `assistant_only_loss needs conversational data (messages), but ${rowName(ctx)} is plain text. ` +
      `Turn off assistant_only_loss or use completion_only_loss with prompt/completion data.`,
  );
}

function noAssistantTurn(ctx: TokenizeContext, messages: ChatMessage[]): TunaError {
  const roles = [...new Set(messages.map((m) => m.role))].join(", ") || "none";
  return new TunaError(
    "FILE_FORMAT",
    `${rowName(ctx)}: assistant_only_loss is on but the conversation has no assistant text to train on (roles: ${roles}). ` +
      `Remove the row, or turn off assistant_only_loss.`,
  );
}

function conversationTokens(prompt: ChatMessage[], completion: ChatMessage[] | undefined, ctx: TokenizeContext): Tokens {
  const template = templateOf(ctx);
  const vars = templateVariables(ctx.tokenizer);
  const messages = completion === undefined ? prompt : [...prompt, ...completion];
  let text: string;
  let spans: CharSpan[] | undefined;
  if (ctx.assistantOnlyLoss) {
    const rendered = renderAssistantSpans(template, messages, vars, rowName(ctx));
    if (rendered.assistantSpans.length === 0) throw noAssistantTurn(ctx, messages);
    ({ text, assistantSpans: spans } = rendered);
  } else {
    text = renderForRow(template, messages, vars, rowName(ctx));
  }
  let completionFrom: number | undefined;
  if (completion !== undefined && ctx.completionOnlyLoss !== false) {
    // The assistant header (the generation prompt) is on the prompt side, as in assistant spans.
    const first = completion[0];
    completionFrom = first === undefined ? text.length : turnStart(template, prompt, first, text, vars, rowName(ctx));
    if (completionFrom === undefined) {
      throw new TunaError(
        "CONFIG_INVALID",
        `${rowName(ctx)}: the chat template renders the prompt differently from the start of prompt + completion, ` +
          `so the completion cannot be located. Fix the template or set completion_only_loss: false.`,
      );
    }
  }
  if (spans === undefined && completionFrom === undefined) {
    return allTokens(ctx.tokenizer.encode(text, { addSpecialTokens: false }));
  }
  return maskedTokens(text, ctx, spans, completionFrom);
}

function passThrough(inputIds: number[], labels: number[] | undefined, ctx: TokenizeContext): Tokens {
  if (labels === undefined) return allTokens([...inputIds]);
  if (labels.length !== inputIds.length) {
    throw new TunaError("FILE_FORMAT", `${rowName(ctx)}: "labels" has ${labels.length} entries but "input_ids" has ${inputIds.length}.`);
  }
  const trained = new Uint8Array(inputIds.length);
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] === -100) continue;
    if (labels[i] !== inputIds[i]) {
      throw new TunaError(
        "FILE_FORMAT",
        `${rowName(ctx)}: labels[${i}] = ${labels[i]} but input_ids[${i}] = ${inputIds[i]}; labels must equal input_ids ` +
          `(unshifted, the model shifts) or be -100.`,
      );
    }
    trained[i] = 1;
  }
  return { ids: [...inputIds], trained };
}

function truncate(tokens: Tokens, ctx: TokenizeContext): TokenizedExample {
  const { ids, trained } = tokens;
  const over = Math.max(0, ids.length - ctx.maxLength);
  const from = ctx.truncation === "keep_end" ? over : 0;
  const to = from + ids.length - over;
  return {
    inputIds: Int32Array.from(ids.slice(from, to)),
    trained: trained.slice(from, to),
    row: ctx.row,
    truncatedTokens: over,
  };
}

/** Tokenize one example with its loss mask, then truncate it to ctx.maxLength. */
// More characters than any token spans (long whitespace pieces included): a text capped at
// 2 * maxLength * this many characters still yields more than maxLength tokens past any cut.
const MAX_CHARS_PER_TOKEN = 256;

/**
 * A string cut to what truncation can keep: a 50 MB row must not be tokenized (and held as tokens) whole
 * when max_length keeps 2048 tokens. The cut lies at least maxLength tokens beyond the kept window (BPE
 * merges are local), so the kept tokens are those of the whole text; only truncatedTokens counts fewer.
 */
function capText(text: string, ctx: TokenizeContext): string {
  const limit = 2 * ctx.maxLength * MAX_CHARS_PER_TOKEN;
  if (text.length <= limit) return text;
  return ctx.truncation === "keep_end" ? text.slice(text.length - limit) : text.slice(0, limit);
}

function capMessages(messages: ChatMessage[], ctx: TokenizeContext): ChatMessage[] {
  return messages.map((m) => (typeof m.content === "string" && m.content.length > 2 * ctx.maxLength * MAX_CHARS_PER_TOKEN ? { ...m, content: capText(m.content, ctx) } : m));
}

/** The example with every text capped by capText (unchanged when all are short). */
function capExample(example: Example, ctx: TokenizeContext): Example {
  switch (example.kind) {
    case "tokens":
      return example;
    case "text":
      return { ...example, text: capText(example.text, ctx) };
    case "prompt_completion":
      return { ...example, prompt: capText(example.prompt, ctx), completion: capText(example.completion, ctx) };
    case "conversation":
      return { ...example, messages: capMessages(example.messages, ctx) };
    case "prompt_completion_chat":
      return { ...example, prompt: capMessages(example.prompt, ctx), completion: capMessages(example.completion, ctx) };
  }
}

export function tokenizeExample(whole: Example, ctx: TokenizeContext): TokenizedExample {
  if (!Number.isInteger(ctx.maxLength) || ctx.maxLength < 1) {
    throw new TunaError("CONFIG_INVALID", `max_length must be a positive integer, got ${ctx.maxLength}.`);
  }
  const example = capExample(whole, ctx);
  const assistantOnly = ctx.assistantOnlyLoss;
  switch (example.kind) {
    case "tokens":
      return truncate(passThrough(example.inputIds, example.labels, ctx), ctx);
    case "text": {
      if (assistantOnly) throw assistantOnlyRequiresChat(ctx);
      const ids = ctx.tokenizer.encode(withEos(example.text, ctx), { addSpecialTokens: false });
      return truncate(addSpecials(allTokens(ids), ctx, true), ctx);
    }
    case "prompt_completion": {
      if (assistantOnly) throw assistantOnlyRequiresChat(ctx);
      const text = example.prompt + withEos(example.completion, ctx);
      const completionOnly = ctx.completionOnlyLoss !== false;
      const tokens = completionOnly
        ? maskedTokens(text, ctx, undefined, example.prompt.length)
        : allTokens(ctx.tokenizer.encode(text, { addSpecialTokens: false }));
      return truncate(addSpecials(tokens, ctx, !completionOnly), ctx);
    }
    case "conversation":
      return truncate(addSpecials(conversationTokens(example.messages, undefined, ctx), ctx, !assistantOnly), ctx);
    case "prompt_completion_chat": {
      const masked = assistantOnly || ctx.completionOnlyLoss !== false;
      return truncate(addSpecials(conversationTokens(example.prompt, example.completion, ctx), ctx, !masked), ctx);
    }
  }
}
