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

// Hostile templates: each must end in CONFIG_INVALID within bounded time, without growing memory without bound.
const HOSTILE: [string, string, string][] = [
  ["a 200-million-item range", "{% for i in range(200000000) %}x{% endfor %}", "range() of 200,000,000 items"],
  ["a string doubled until memory runs out", "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}", "characters, over the limit"],
  ["a variable named range does not lift the limit", "{{ range(200000000) | length }}", "range() of 200,000,000 items"],
];

for (const [what, template, fragment] of HOSTILE) {
  void test(`a hostile template is stopped with a clear error: ${what}`, () => {
    const started = performance.now();
    const heapBefore = process.memoryUsage().heapUsed;
    assert.throws(
      () => renderChatTemplate(template, [{ role: "user", content: "hi" }], { variables: { range: (n: number) => Array.from({ length: 3 }, (_, i) => i + n) } }),
      (e: unknown) => e instanceof TunaError && e.code === "CONFIG_INVALID" && e.message.includes(fragment) && e.message.includes("untrusted"),
    );
    const seconds = (performance.now() - started) / 1000;
    assert.ok(seconds < 30, `took ${seconds.toFixed(1)} s`);
    assert.ok(process.memoryUsage().heapUsed - heapBefore < 1.5 * 1024 ** 3, "heap grew past 1.5 GiB");
  });
}

void test("the sandbox keeps what chat templates use: range, loop, namespace, strftime_now, raise_exception", () => {
  const template =
    "{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}|{{ range(1, 10, 4) | join(',') }}|" +
    "{{ range(5, 0, -2) | join(',') }}|{{ strftime_now('%Y') | length }}|{% if true and not false and none is none %}ok{% endif %}";
  assert.equal(renderChatTemplate(template, []), `3|1,5,9|5,3,1|4|ok`);
});

void test("sandbox escapes stay refused: no attribute walks to constructors, globals or the process", () => {
  const probes = [
    "{{ messages.constructor.constructor('return process')().exit(3) }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ range.__globals__ }}",
    "{{ messages['constructor']['constructor']('return process')() }}",
    "{{ (messages|first).__proto__ }}",
  ];
  for (const probe of probes) {
    let out: string | undefined;
    try {
      out = renderChatTemplate(probe, [{ role: "user", content: "x" }]);
    } catch (e) {
      assert.ok(e instanceof TunaError && e.code === "CONFIG_INVALID", `${probe}: ${String(e)}`);
      continue;
    }
    // Rendering may succeed with an undefined value, but must not reach a function or the process.
    assert.ok(!/function|process|native code|\[object/i.test(out), `${probe} rendered ${out}`);
  }
});
