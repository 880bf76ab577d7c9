// Where each assistant turn lies in a rendered conversation, for any chat template: the conversation is
// rendered prefix by prefix, and an assistant turn is what its message adds after the generation prompt.
//
// A template with {% generation %} blocks (what TRL's assistant_only_loss requires, e.g. TRL's own
// *_training.jinja templates) marks the spans itself: the text its blocks render, as transformers'
// return_assistant_tokens_mask takes it (checked against TRL's SFTTrainer in test/golden/trainer). Without
// markers no response template is searched for in tokens (TRL issues 598/980/1191: the same string tokenizes
// differently in context): the span runs from the end of the generation prompt (or, for a template that
// ignores add_generation_prompt, from the message's content) to the end of the turn's text minus trailing
// whitespace: the content and the end-of-turn token (<|im_end|>, </s>, ...), not the role header and not the
// newline between turns.

import { renderChatTemplate } from "../tokenizer/chat-template.ts";
import type { ChatMessage, ChatTemplateOptions } from "../tokenizer/chat-template.ts";
import { TunaError, isTunaError } from "../util/errors.ts";

export interface CharSpan {
  start: number;
  end: number;
}

export interface RenderedChat {
  text: string;
  /** Character spans of the assistant turns, in order, not overlapping. */
  assistantSpans: CharSpan[];
}

/**
 * renderChatTemplate with the row named in its errors (a template's raise_exception included); `where` is
 * the row's origin as the readers print it ("data/train.jsonl:17").
 */
export function renderForRow(template: string, messages: ChatMessage[], options: ChatTemplateOptions, where: string): string {
  try {
    return renderChatTemplate(template, messages, options);
  } catch (e) {
    if (!isTunaError(e)) throw e;
    throw new TunaError(e.code, `${where}: ${e.message}`, { cause: e });
  }
}

function prefixError(where: string, index: number): TunaError {
  return new TunaError(
    "CONFIG_INVALID",
    `${where}: the chat template renders the conversation up to message ${index} (an assistant turn) differently ` +
      `when later messages follow, so the assistant's text cannot be located by rendering prefixes. ` +
      `Use a template that renders each turn independently of what follows, or turn off assistant_only_loss.`,
  );
}

// A template may refuse an empty conversation; nothing then precedes an opening assistant turn.
function renderPrefix(template: string, messages: ChatMessage[], options: ChatTemplateOptions, where: string): string {
  if (messages.length > 0) return renderForRow(template, messages, options, where);
  try {
    return renderChatTemplate(template, messages, options);
  } catch {
    return "";
  }
}

// Stands in for a message's content to find where a template puts it; plain letters survive strip/trim.
const CONTENT_MARK = "TunaContentMarkQ7xZ";

function backOverSpaces(text: string, at: number, from: number): number {
  while (at > from && (text[at - 1] === " " || text[at - 1] === "\t")) at--;
  return at;
}

/**
 * Where the text of `message` starts in `rendered` (which renders `before` + `message` + maybe more):
 * after the generation prompt when the template has one that opens this turn; otherwise where the template
 * puts the content (found by rendering the turn with a marker as content, or else by searching for the
 * content), moved back over the spaces before it (sentencepiece and byte-level BPE attach a leading
 * space to the word). Undefined when `before` does not render as a prefix of `rendered`.
 */
export function turnStart(
  template: string,
  before: ChatMessage[],
  message: ChatMessage,
  rendered: string,
  options: ChatTemplateOptions,
  where: string,
): number | undefined {
  const plain = renderPrefix(template, before, { ...options, addGenerationPrompt: false }, where);
  const prompt = renderPrefix(template, before, { ...options, addGenerationPrompt: true }, where);
  if (prompt !== plain && rendered.startsWith(prompt)) return prompt.length;
  if (!rendered.startsWith(plain)) return undefined;
  let marked = "";
  try {
    marked = renderChatTemplate(template, [...before, { ...message, content: CONTENT_MARK }], options);
  } catch {
    // A template that checks the content: fall back to searching for it.
  }
  const at = marked.indexOf(CONTENT_MARK, plain.length);
  if (at >= 0 && rendered.startsWith(marked.slice(0, at))) return backOverSpaces(rendered, at, plain.length);
  const content = message.content.trim();
  const found = content === "" ? -1 : rendered.indexOf(content, plain.length);
  return found < 0 ? plain.length : backOverSpaces(rendered, found, plain.length);
}

// {% generation %} / {% endgeneration %} as @huggingface/jinja's preprocess removes them (with the same
// whitespace control), but leaving a private-use character where each was, so the rendered text shows the blocks.
const GENERATION_TAG = /(\s*){%(-?)\s*(end)?generation\s*(-?)%}(\s*)/gs;
const OPEN = "\uE000";
const CLOSE = "\uE001";

function markGenerationBlocks(template: string): string | undefined {
  if (!/{%-?\s*generation\s*-?%}/.test(template)) return undefined;
  return template.replace(GENERATION_TAG, (_m, before: string, lstrip: string, end: string | undefined, rstrip: string, after: string) => {
    return (lstrip === "-" ? "" : before) + `{{ "${end === undefined ? OPEN : CLOSE}" }}` + (rstrip === "-" ? "" : after);
  });
}

/** The text without the markers, and the spans the markers enclosed; undefined when the markers do not pair up. */
function generationSpans(marked: string): RenderedChat | undefined {
  let text = "";
  let open: number | undefined;
  const assistantSpans: CharSpan[] = [];
  for (const ch of marked) {
    if (ch === OPEN) {
      if (open !== undefined) return undefined;
      open = text.length;
    } else if (ch === CLOSE) {
      if (open === undefined) return undefined;
      if (text.length > open) assistantSpans.push({ start: open, end: text.length });
      open = undefined;
    } else {
      text += ch;
    }
  }
  return open === undefined ? { text, assistantSpans } : undefined;
}

/** Render `messages` and find the character span of every assistant turn. */
export function renderAssistantSpans(
  template: string,
  messages: ChatMessage[],
  options: ChatTemplateOptions,
  where: string,
): RenderedChat {
  const text = renderForRow(template, messages, options, where);
  const marked = markGenerationBlocks(template);
  // The markers are private-use characters: content that holds them goes the template-independent way.
  if (marked !== undefined && !text.includes(OPEN) && !text.includes(CLOSE)) {
    const spans = generationSpans(renderForRow(marked, messages, options, where));
    if (spans !== undefined && spans.text === text) return spans;
  }
  const assistantSpans: CharSpan[] = [];
  for (let i = 0; i < messages.length; i++) {
    const message = messages[i]!;
    if (message.role !== "assistant") continue;
    const through = i + 1 === messages.length ? text : renderForRow(template, messages.slice(0, i + 1), options, where);
    if (!text.startsWith(through)) throw prefixError(where, i);
    const start = turnStart(template, messages.slice(0, i), message, through, options, where);
    if (start === undefined) throw prefixError(where, i);
    const end = start + through.slice(start).trimEnd().length;
    const previousEnd = assistantSpans.at(-1)?.end ?? 0;
    if (start < previousEnd) throw prefixError(where, i);
    if (end > start) assistantSpans.push({ start, end });
  }
  return { text, assistantSpans };
}
