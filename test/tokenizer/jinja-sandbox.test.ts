// renderBounded's time limit on loops that stay within range()'s limit (10^10 iterations in all), with a
// short deadline so the test is quick; the other limits are tested through renderChatTemplate.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Template } from "@huggingface/jinja";
import { DEFAULT_RENDER_LIMITS, TemplateLimitError, renderBounded } from "../../src/tokenizer/jinja-sandbox.ts";

void test("nested loops of allowed ranges are stopped by the deadline, within a few seconds of it", () => {
  const template = new Template("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
  const started = performance.now();
  assert.throws(() => renderBounded(template, {}, { ...DEFAULT_RENDER_LIMITS, maxMs: 300 }), (e: unknown) => e instanceof TemplateLimitError && /ran for more than 0.3 s/.test(e.message));
  const seconds = (performance.now() - started) / 1000;
  assert.ok(seconds < 15, `took ${seconds.toFixed(1)} s`);
});

void test("a template within the limits renders as the library renders it", () => {
  const source = "{% for m in messages %}{{ loop.index }}:{{ m.role }}={{ m.content | upper }};{% endfor %}{{ range(3) | length }}";
  const variables = { messages: [{ role: "user", content: "a" }, { role: "assistant", content: "b" }] };
  assert.equal(renderBounded(new Template(source), variables), new Template(source).render(variables));
});
