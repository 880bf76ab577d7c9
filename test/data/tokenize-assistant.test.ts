// assistant_only_loss masks for three template structures (chatml, zephyr, Llama-2 [INST]) and a template
// without a generation prompt, multi-turn, prompt/completion chats, and the errors (no assistant turn,
// a template's raise_exception, a template that rewrites earlier turns). Expected token pieces and masks
// are written by hand from the rendered strings: after an added token the text is its own piece, which
// the Prepend normalizer starts with "▁"; "\n" is the byte token <0x0A>.

import { before, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { setupChatFormat } from "../../src/data/chat-format.ts";
import { tokenizeExample } from "../../src/data/tokenize.ts";
import type { TokenizeContext } from "../../src/data/tokenize.ts";
import type { Example } from "../../src/data/types.ts";
import type { ChatSetup } from "../../src/data/chat-format.ts";
import { loadTokenizer } from "../../src/tokenizer/load.ts";
import { TunaError } from "../../src/util/errors.ts";

const TINY = fileURLToPath(new URL("../../examples/tiny-llama", import.meta.url));
let chatml: ChatSetup;
let zephyr: ChatSetup;
let none: ChatSetup;

before(async () => {
  const base = await loadTokenizer(TINY);
  chatml = setupChatFormat(base, "chatml", 32000);
  zephyr = setupChatFormat(base, "zephyr", 32000);
  none = setupChatFormat(base, "none", 32000);
});

// meta-llama/Llama-2-7b-chat-hf's chat_template: no generation prompt, the assistant turn is ' ' + content + ' ' + eos.
const LLAMA2 =
  "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}" +
  "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}" +
  "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
  "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}" +
  "{% else %}{% set content = message['content'] %}{% endif %}" +
  "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}" +
  "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

// The header on the same line as the content, and no add_generation_prompt support at all.
const SAME_LINE =
  "{% for m in messages %}{% if m['role'] == 'user' %}{{ 'User: ' + m['content'] + '\\n' }}" +
  "{% else %}{{ 'Assistant: ' + m['content'] + eos_token + '\\n' }}{% endif %}{% endfor %}";

const CONVERSATION = [
  { role: "user", content: "Hi" },
  { role: "assistant", content: "Hello there" },
];
const MULTI = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Hi" },
  { role: "assistant", content: "Hello there" },
  { role: "user", content: "Thanks" },
  { role: "assistant", content: "You are welcome" },
];

function ctxFor(setup: ChatSetup, over: Partial<TokenizeContext> = {}): TokenizeContext {
  return {
    tokenizer: setup.tokenizer,
    ...(setup.template === undefined ? {} : { template: setup.template }),
    maxLength: 1024,
    addSpecialTokens: false,
    appendConcatToken: false,
    assistantOnlyLoss: true,
    completionOnlyLoss: undefined,
    truncation: "keep_start",
    row: 5,
    ...over,
  };
}

// [piece, trained] pairs; a piece is a vocab piece or an added token's text.
function pieces(setup: ChatSetup, example: Example, ctx: TokenizeContext): [string, number][] {
  const out = tokenizeExample(example, ctx);
  return Array.from(out.inputIds, (id, i) => [setup.tokenizer.idToToken(id)!, out.trained[i]!]);
}

const NL: [string, number][] = [["▁", 0], ["<0x0A>", 0]];
const nl = (trained: number): [string, number][] => [["▁", trained], ["<0x0A>", trained]];

test("chatml: the assistant content and its <|im_end|> are trained, header and newline are not", () => {
  // <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n[Hello there<|im_end|>]\n
  const expected: [string, number][] = [
    ["<|im_start|>user", 0], ...NL, ["Hi", 0], ["<|im_end|>", 0], ...NL,
    ["<|im_start|>assistant", 0], ...NL, ["Hello", 1], ["▁there", 1], ["<|im_end|>", 1], ...NL,
  ];
  assert.deepEqual(pieces(chatml, { kind: "conversation", messages: CONVERSATION }, ctxFor(chatml)), expected);
});

test("zephyr: the assistant content and its </s> are trained; the user's </s> is not", () => {
  // <|user|>\nHi</s>\n<|assistant|>\n[Hello there</s>]\n
  const expected: [string, number][] = [
    ["<|user|>", 0], ...NL, ["Hi", 0], ["</s>", 0], ...NL,
    ["<|assistant|>", 0], ...NL, ["Hello", 1], ["▁there", 1], ["</s>", 1], ...NL,
  ];
  assert.deepEqual(pieces(zephyr, { kind: "conversation", messages: CONVERSATION }, ctxFor(zephyr)), expected);
});

test("chatml multi-turn with a system message: both assistant turns, nothing else", () => {
  const expected: [string, number][] = [
    ["<|im_start|>system", 0], ...NL, ["Be", 0], ["▁brief", 0], [".", 0], ["<|im_end|>", 0], ...NL,
    ["<|im_start|>user", 0], ...NL, ["Hi", 0], ["<|im_end|>", 0], ...NL,
    ["<|im_start|>assistant", 0], ...NL, ["Hello", 1], ["▁there", 1], ["<|im_end|>", 1], ...NL,
    ["<|im_start|>user", 0], ...NL, ["Thanks", 0], ["<|im_end|>", 0], ...NL,
    ["<|im_start|>assistant", 0], ...NL, ["You", 1], ["▁are", 1], ["▁welcome", 1], ["<|im_end|>", 1], ...NL,
  ];
  assert.deepEqual(pieces(chatml, { kind: "conversation", messages: MULTI }, ctxFor(chatml)), expected);
  // Without assistant_only_loss every token is trained.
  const all = pieces(chatml, { kind: "conversation", messages: MULTI }, ctxFor(chatml, { assistantOnlyLoss: false }));
  assert.deepEqual(all, expected.map(([p]) => [p, 1]));
});

test("Llama-2 [INST] template: ' content </s>' after [/INST] is trained, with no generation prompt to go by", () => {
  const setup = { ...none, template: LLAMA2 };
  // <s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST][ Hello there </s>]<s>[INST] Thanks [/INST][ You are welcome </s>]
  const inst: [string, number][] = [["▁[", 0], ["INST", 0], ["]", 0]];
  const close: [string, number][] = [["▁[", 0], ["/", 0], ["INST", 0], ["]", 0]];
  const expected: [string, number][] = [
    ["<s>", 0], ...inst, ["▁<<", 0], ["SYS", 0], [">>", 0], ["<0x0A>", 0], ["Be", 0], ["▁brief", 0], [".", 0], ["<0x0A>", 0],
    ["<", 0], ["</", 0], ["SYS", 0], [">>", 0], ["<0x0A>", 0], ["<0x0A>", 0], ["Hi", 0], ...close,
    ["▁Hello", 1], ["▁there", 1], ["▁", 1], ["</s>", 1],
    ["<s>", 0], ...inst, ["▁Thanks", 0], ...close, ["▁You", 1], ["▁are", 1], ["▁welcome", 1], ["▁", 1], ["</s>", 1],
  ];
  assert.deepEqual(pieces(setup, { kind: "conversation", messages: MULTI }, ctxFor(setup)), expected);
});

test("header on the content's line, template without add_generation_prompt: the header is not trained", () => {
  const setup = { ...none, template: SAME_LINE };
  // User: Hi\nAssistant:[ Hello there</s>]\nUser: Thanks\nAssistant:[ You are welcome</s>]\n
  const expected: [string, number][] = [
    ["▁User", 0], [":", 0], ["▁Hi", 0], ["<0x0A>", 0], ["Ass", 0], ["istant", 0], [":", 0],
    ["▁Hello", 1], ["▁there", 1], ["</s>", 1], ...NL,
    ["User", 0], [":", 0], ["▁Thanks", 0], ["<0x0A>", 0], ["Ass", 0], ["istant", 0], [":", 0],
    ["▁You", 1], ["▁are", 1], ["▁welcome", 1], ["</s>", 1], ...NL,
  ];
  assert.deepEqual(pieces(setup, { kind: "conversation", messages: MULTI.slice(1) }, ctxFor(setup)), expected);
  // Content that also occurs in the header ("ant" in "Assistant") is found where the template puts it.
  const ant: [string, number][] = [
    ["▁User", 0], [":", 0], ["▁Hi", 0], ["<0x0A>", 0], ["Ass", 0], ["istant", 0], [":", 0], ["▁ant", 1], ["</s>", 1], ...NL,
  ];
  const messages = [CONVERSATION[0]!, { role: "assistant", content: "ant" }];
  assert.deepEqual(pieces(setup, { kind: "conversation", messages }, ctxFor(setup)), ant);
});

test("prompt/completion chat: the completion after the generation prompt is trained", () => {
  const example: Example = { kind: "prompt_completion_chat", prompt: [CONVERSATION[0]!], completion: [CONVERSATION[1]!] };
  const expected: [string, number][] = [
    ["<|im_start|>user", 0], ...NL, ["Hi", 0], ["<|im_end|>", 0], ...NL,
    ["<|im_start|>assistant", 0], ...NL, ["Hello", 1], ["▁there", 1], ["<|im_end|>", 1], ...nl(1),
  ];
  // completion_only_loss (default) trains the completion through the end of the text, as TRL's completion_mask.
  assert.deepEqual(pieces(chatml, example, ctxFor(chatml, { assistantOnlyLoss: false })), expected);
  // With assistant_only_loss too, the trailing newline after <|im_end|> drops out.
  assert.deepEqual(pieces(chatml, example, ctxFor(chatml)), [...expected.slice(0, -2), ...NL]);
  // completion_only_loss false and no assistant_only_loss: everything.
  const all = pieces(chatml, example, ctxFor(chatml, { assistantOnlyLoss: false, completionOnlyLoss: false }));
  assert.deepEqual(all, expected.map(([p]) => [p, 1]));
});

test("add_special_tokens puts <s> before a chat and leaves it untrained", () => {
  const out = tokenizeExample({ kind: "conversation", messages: CONVERSATION }, ctxFor(chatml, { addSpecialTokens: true }));
  assert.equal(out.inputIds[0], 1);
  assert.equal(out.trained[0], 0);
  // The Llama-2 template writes <s> itself: no second one.
  const llama = { ...none, template: LLAMA2 };
  const own = tokenizeExample({ kind: "conversation", messages: CONVERSATION }, ctxFor(llama, { addSpecialTokens: true }));
  assert.deepEqual([own.inputIds[0], own.inputIds[1]], [1, none.tokenizer.tokenToId("▁[")]);
});

test("no assistant turn under assistant_only_loss is an error naming the row", () => {
  assert.throws(
    () => tokenizeExample({ kind: "conversation", messages: [{ role: "user", content: "Hi" }] }, ctxFor(chatml, { row: 17 })),
    (e: unknown) => e instanceof TunaError && e.code === "FILE_FORMAT" && /row 17/.test(e.message) && /roles: user/.test(e.message),
  );
});

test("a role the template rejects: CONFIG_INVALID with the row and the template's message", () => {
  const setup = { ...none, template: LLAMA2 };
  const messages = [{ role: "assistant", content: "I speak first" }, { role: "user", content: "Hi" }];
  for (const assistantOnlyLoss of [true, false]) {
    assert.throws(
      () => tokenizeExample({ kind: "conversation", messages }, ctxFor(setup, { row: 9, assistantOnlyLoss })),
      (e: unknown) =>
        e instanceof TunaError && e.code === "CONFIG_INVALID" && e.message.startsWith("row 9:") && e.message.includes("roles must alternate"),
    );
  }
});

test("a template that renders earlier turns differently once more follow cannot be masked by prefixes", () => {
  // Marks the last message: the assistant turn reads differently when it is last.
  const template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}{% if loop.last %}!{% endif %}\n{% endfor %}";
  assert.throws(
    () => tokenizeExample({ kind: "conversation", messages: MULTI.slice(1) }, ctxFor({ ...none, template }, { row: 4 })),
    (e: unknown) => e instanceof TunaError && e.code === "CONFIG_INVALID" && /row 4/.test(e.message) && /message 1/.test(e.message),
  );
});

test("a conversation without any template is a configuration error", () => {
  const noTemplate = ctxFor({ ...none, tokenizer: { ...none.tokenizer, chatTemplate: undefined } });
  delete noTemplate.template;
  assert.throws(
    () => tokenizeExample({ kind: "conversation", messages: CONVERSATION }, noTemplate),
    (e: unknown) => e instanceof TunaError && e.code === "CONFIG_INVALID" && /chat_template_format/.test(e.message),
  );
});

test("a template's {% generation %} blocks mark the spans (TRL's assistant_only_loss), with jinja's whitespace control; unpaired markers fall back to rendering prefixes", async () => {
  const { renderAssistantSpans } = await import("../../src/data/assistant-spans.ts");
  const messages = [
    { role: "user", content: "hi" },
    { role: "assistant", content: "hello" },
    { role: "user", content: "bye" },
    { role: "assistant", content: "ciao" },
  ];
  // The block takes the header's newline and the turn's closing newline, unlike tuna's own rule.
  const template =
    "{% for m in messages %}{{ '<|im_start|>' + m.role }}{% if m.role == 'assistant' %}{%- generation -%}{{ '\\n' + m.content + '<|im_end|>\\n' }}{%- endgeneration -%}" +
    "{% else %}{{ '\\n' + m.content + '<|im_end|>\\n' }}{% endif %}{% endfor %}";
  const r = renderAssistantSpans(template, messages, {}, "row 1");
  assert.equal(r.text, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\nbye<|im_end|>\n<|im_start|>assistant\nciao<|im_end|>\n");
  assert.deepEqual(r.assistantSpans.map((s) => r.text.slice(s.start, s.end)), ["\nhello<|im_end|>\n", "\nciao<|im_end|>\n"]);
  // Without the blocks, tuna's rule: after the header's newline, up to the end-of-turn token.
  const plain = renderAssistantSpans(template.replaceAll("{%- generation -%}", "").replaceAll("{%- endgeneration -%}", ""), messages, {}, "row 1");
  assert.deepEqual(plain.assistantSpans.map((s) => plain.text.slice(s.start, s.end)), ["hello<|im_end|>", "ciao<|im_end|>"]);
  // A block opened twice: the markers do not pair up, so the template-independent rule applies.
  const broken = renderAssistantSpans(template.replace("{%- endgeneration -%}", ""), messages, {}, "row 1");
  assert.deepEqual(broken.assistantSpans.map((s) => broken.text.slice(s.start, s.end)), ["hello<|im_end|>", "ciao<|im_end|>"]);
});
