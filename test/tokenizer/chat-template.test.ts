// renderChatTemplate: Mistral-Instruct's template on a two-turn conversation, a ChatML generation prompt,
// and template errors (raise_exception, syntax) as CONFIG_INVALID. Expected strings are derived by hand.

import { test } from "node:test";
import assert from "node:assert/strict";
import { renderChatTemplate } from "../../src/tokenizer/chat-template.ts";
import { TunaError } from "../../src/util/errors.ts";

// The chat_template of Mistral-7B-Instruct-v0.1's tokenizer_config.json.
const MISTRAL =
  "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
  "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}" +
  "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}" +
  "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

const CHATML =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

void test("renders a two-turn Mistral conversation", () => {
  const messages = [
    { role: "user", content: "Hello, how are you?" },
    { role: "assistant", content: "I'm doing great. How can I help you today?" },
    { role: "user", content: "I'd like to show off how chat templating works!" },
  ];
  // bos, then per user turn "[INST] " + content + " [/INST]", per assistant turn content + eos + " ".
  const expected =
    "<s>" +
    "[INST] Hello, how are you? [/INST]" +
    "I'm doing great. How can I help you today?</s> " +
    "[INST] I'd like to show off how chat templating works! [/INST]";
  assert.equal(renderChatTemplate(MISTRAL, messages, { bosToken: "<s>", eosToken: "</s>" }), expected);
});

void test("add_generation_prompt opens an assistant turn", () => {
  const messages = [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hi" },
  ];
  const base = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n";
  assert.equal(renderChatTemplate(CHATML, messages), base);
  assert.equal(renderChatTemplate(CHATML, messages, { addGenerationPrompt: true }), `${base}<|im_start|>assistant\n`);
});

void test("extra variables reach the template", () => {
  const template = "{% if enable_thinking %}think{% else %}plain{% endif %}:{{ tools | length }}";
  const out = renderChatTemplate(template, [], { tools: [{ name: "a" }, { name: "b" }], variables: { enable_thinking: true } });
  assert.equal(out, "think:2");
});

void test("raise_exception and syntax errors become CONFIG_INVALID naming the problem", () => {
  assert.throws(
    () => renderChatTemplate(MISTRAL, [{ role: "assistant", content: "first" }], { bosToken: "<s>", eosToken: "</s>" }),
    (e: unknown) =>
      e instanceof TunaError && e.code === "CONFIG_INVALID" && e.message.includes("Conversation roles must alternate"),
  );
  assert.throws(
    () => renderChatTemplate("{% for m in messages %}{{ m.content }}", [{ role: "user", content: "x" }]),
    (e: unknown) => e instanceof TunaError && e.code === "CONFIG_INVALID" && e.message.includes("does not parse"),
  );
});

void test("parsed templates are reused per source: alternating templates render their own text, a broken one fails every time", () => {
  const messages = [{ role: "user", content: "Hi" }];
  for (let i = 0; i < 3; i++) {
    assert.equal(renderChatTemplate(CHATML, messages), "<|im_start|>user\nHi<|im_end|>\n");
    assert.equal(renderChatTemplate(MISTRAL, messages, { bosToken: "<s>" }), "<s>[INST] Hi [/INST]");
    // One render's variables do not leak into the next render of the same parsed template.
    assert.equal(renderChatTemplate(CHATML, messages, { addGenerationPrompt: i === 1 }), "<|im_start|>user\nHi<|im_end|>\n" + (i === 1 ? "<|im_start|>assistant\n" : ""));
    assert.throws(() => renderChatTemplate("{% if %}", messages), (e: unknown) => e instanceof TunaError && e.message.includes("does not parse"));
  }
  // More distinct templates than the cache holds still each render correctly.
  for (let i = 0; i < 40; i++) assert.equal(renderChatTemplate(`{{ 'v${i}' }}{{ messages[0]['content'] }}`, messages), `v${i}Hi`);
});
