// tuna serve driven by the official `openai` client: models listed, chat and completions with and without
// streaming, two adapters at once giving what tuna's own generation gives for each (greedy), stop sequences,
// cancellation mid-stream, 50 concurrent requests; and the HTTP errors of bad requests, the server going on.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { parseModelConfig } from "../../src/hf/config.ts";
import { writeAdapter } from "../../src/lora/adapter-files.ts";
import { allocateLoraParams } from "../../src/lora/init.ts";
import { loraLayout } from "../../src/lora/layout.ts";
import { makeLoraSettings } from "../../src/lora/settings.ts";
import { createRng } from "../../src/util/random.ts";
import { openGenerationSession, runGeneration } from "../../src/cli/commands/generate.ts";
import { encodeChat, replyText } from "../../src/train/generation-session.ts";
import { GREEDY } from "../../src/model/sampling.ts";
import type { ChatMessage } from "../../src/tokenizer/chat-template.ts";
import { startServe, type RunningServer } from "../../src/cli/commands/serve.ts";

const root = new URL("../..", import.meta.url).pathname;
const MODEL = join(root, "examples/tiny-llama");
let tmp = "";
let server: RunningServer;
let client: OpenAI;
const adapters: { name: string; dir: string }[] = [];
const notices: string[] = [];

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tuna-serve-"));
  const cfg = parseModelConfig(JSON.parse(await readFile(join(MODEL, "config.json"), "utf8")), "tiny-llama");
  for (const [i, name] of ["alpha", "beta"].entries()) {
    const settings = makeLoraSettings({ r: 4, alpha: 8, targetModules: "all-linear" }, cfg);
    const params = allocateLoraParams(loraLayout(settings, cfg));
    const rng = createRng(100 + i);
    for (let j = 0; j < params.flat.length; j++) params.flat[j] = 0.5 * rng.normal();
    const dir = join(tmp, name);
    await writeAdapter(dir, { settings, params, embeddings: null });
    adapters.push({ name, dir });
  }
  // An adapter folder that does not load: answered with 503, the others served.
  await writeFile(join(tmp, "broken.txt"), "not an adapter");
  server = await startServe({
    model: MODEL,
    adapters: [...adapters, { name: "broken", dir: join(tmp, "broken.txt") }],
    values: { device: "cpu", seed: "0" },
    servedModelName: "tiny",
    host: "127.0.0.1",
    port: 0,
    maxQueue: 64,
    prefixCache: 4,
    onNotice: (m) => notices.push(m),
  });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
});

after(async () => {
  await server.close();
  await rm(tmp, { recursive: true, force: true });
});

const messages = [{ role: "user" as const, content: "Say something about tuna." }];

/** What `tuna generate --chat` gives for the same conversation: greedy, max_new_tokens 12. */
async function expectedReply(adapter: string | undefined, conversation: ChatMessage[] = messages): Promise<string> {
  const session = await openGenerationSession(MODEL, { device: "cpu", seed: "0", ...(adapter === undefined ? {} : { adapter }) }, "cpu");
  const template = session.tokenizer.chatTemplate!;
  const prompt = encodeChat(session, template, conversation);
  const r = await runGeneration(session, prompt, { maxNewTokens: 12, eosTokenIds: session.opened.cfg.eosTokenIds, sampling: GREEDY }, 0);
  return replyText(session, r);
}

void test("GET /v1/models lists the base and the adapters that loaded; the broken one was reported", async () => {
  const list = await client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), ["tiny", "alpha", "beta"]);
  assert.ok(notices.some((n) => n.includes("adapter broken") && n.includes("HTTP 503")), notices.join("\n"));
  const health = await fetch(`${server.url}/health`);
  assert.deepEqual(await health.json(), { status: "ok" });
  // Each request leaves an access-log line.
  assert.ok(notices.some((n) => /^GET \/v1\/models 200 \d+ ms$/.test(n)), notices.join("\n"));
});

void test("two adapters asked at once answer as tuna's own greedy generation does for each; the adapters differ", async () => {
  const ask = (model: string): Promise<OpenAI.Chat.Completions.ChatCompletion> => client.chat.completions.create({ model, messages, temperature: 0, max_completion_tokens: 12 });
  const before = { ...server.server.batcher.stats };
  const [a, b, base] = await Promise.all([ask("alpha"), ask("beta"), ask("tiny")]);
  // They generated together: steps with the three adapters' rows in one batch.
  assert.equal(server.server.batcher.stats.largestBatch, 3);
  assert.ok(server.server.batcher.stats.rows - before.rows > server.server.batcher.stats.steps - before.steps, "some steps decoded several rows");
  assert.equal(a.choices[0]!.message.content, await expectedReply(adapters[0]!.dir));
  assert.equal(b.choices[0]!.message.content, await expectedReply(adapters[1]!.dir));
  assert.equal(base.choices[0]!.message.content, await expectedReply(undefined));
  assert.notEqual(a.choices[0]!.message.content, b.choices[0]!.message.content);
  assert.equal(a.object, "chat.completion");
  assert.ok(a.usage !== undefined && a.usage.prompt_tokens > 0 && a.usage.completion_tokens > 0 && a.usage.completion_tokens <= 12);
  assert.ok(a.choices[0]!.finish_reason === "length" || a.choices[0]!.finish_reason === "stop");
});

void test("streaming chat: the deltas add up to the non-streamed answer, the last chunk carries finish_reason", async () => {
  const whole = await client.chat.completions.create({ model: "alpha", messages, temperature: 0, max_completion_tokens: 12 });
  const stream = await client.chat.completions.create({ model: "alpha", messages, temperature: 0, max_completion_tokens: 12, stream: true });
  let text = "";
  let role: string | undefined;
  let finish: string | null | undefined;
  for await (const chunk of stream) {
    const choice = chunk.choices[0]!;
    role ??= choice.delta.role;
    text += choice.delta.content ?? "";
    finish = choice.finish_reason ?? finish;
  }
  assert.equal(role, "assistant");
  assert.equal(text, whole.choices[0]!.message.content);
  assert.equal(finish, whole.choices[0]!.finish_reason);
  // stream_options.include_usage: a last chunk without choices carries the token counts.
  const counted = await client.chat.completions.create({ model: "alpha", messages, temperature: 0, max_completion_tokens: 12, stream: true, stream_options: { include_usage: true } });
  let usage: OpenAI.CompletionUsage | null | undefined;
  for await (const chunk of counted) usage = chunk.usage ?? usage;
  assert.deepEqual(usage, whole.usage);
});

void test("completions: the prompt continued, a stop sequence ends the text before it, sampling with a seed repeats", async () => {
  const plain = await client.completions.create({ model: "tiny", prompt: "Once upon a time", temperature: 0, max_tokens: 10 });
  const text = plain.choices[0]!.text;
  assert.ok(text.length > 0);
  const stopAt = text.slice(2, 4);
  const stopped = await client.completions.create({ model: "tiny", prompt: "Once upon a time", temperature: 0, max_tokens: 10, stop: [stopAt] });
  assert.equal(stopped.choices[0]!.text, text.slice(0, text.indexOf(stopAt)));
  assert.equal(stopped.choices[0]!.finish_reason, "stop");
  const sampled = (): Promise<OpenAI.Completions.Completion> => client.completions.create({ model: "beta", prompt: "Hello", temperature: 1.2, top_p: 0.9, max_tokens: 8, seed: 7 });
  assert.equal((await sampled()).choices[0]!.text, (await sampled()).choices[0]!.text);
});

void test("a streaming request cancelled by the client stops; the server goes on serving", async () => {
  const controller = new AbortController();
  const stream = await client.chat.completions.create({ model: "beta", messages, temperature: 0, max_completion_tokens: 400, stream: true }, { signal: controller.signal });
  let chunks = 0;
  try {
    for await (const chunk of stream) {
      assert.equal(chunk.object, "chat.completion.chunk");
      chunks++;
      if (chunks === 2) controller.abort();
    }
  } catch (e) {
    assert.ok(e instanceof OpenAI.APIUserAbortError || (e as Error).name === "AbortError", String(e));
  }
  assert.equal(chunks, 2, "no chunk after the abort");
  const after = await client.chat.completions.create({ model: "beta", messages, temperature: 0, max_completion_tokens: 4 });
  assert.ok(after.choices[0]!.message.content !== null);
});

void test("50 concurrent requests all succeed", async () => {
  const all = await Promise.all(Array.from({ length: 50 }, (_, i) => client.completions.create({ model: i % 2 === 0 ? "alpha" : "tiny", prompt: `number ${i}`, temperature: 0, max_tokens: 2 })));
  assert.equal(all.length, 50);
  for (const r of all) assert.equal(r.object, "text_completion");
});

void test("bad requests are HTTP errors in OpenAI's shape: unknown or broken model, bad JSON, bad fields, context overflow, unknown route", async () => {
  await assert.rejects(client.chat.completions.create({ model: "gamma", messages }), (e: unknown) => e instanceof OpenAI.NotFoundError && /does not exist; GET \/v1\/models lists tiny, alpha, beta/.test(e.message));
  await assert.rejects(client.chat.completions.create({ model: "broken", messages }), (e: unknown) => e instanceof OpenAI.APIError && e.status === 503 && /failed to load/.test(e.message));
  const raw = await fetch(`${server.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: "{not json" });
  assert.equal(raw.status, 400);
  assert.equal(((await raw.json()) as { error: { code: string } }).error.code, "invalid_json");
  await assert.rejects(client.chat.completions.create({ model: "tiny", messages, n: 2 }), (e: unknown) => e instanceof OpenAI.BadRequestError && /n must be 1/.test(e.message));
  await assert.rejects(client.chat.completions.create({ model: "tiny", messages, temperature: 3 }), (e: unknown) => e instanceof OpenAI.BadRequestError && /temperature/.test(e.message));
  await assert.rejects(client.completions.create({ model: "tiny", prompt: "hi", max_tokens: 100_000 }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.code === "context_length_exceeded");
  assert.equal((await fetch(`${server.url}/v2/anything`)).status, 404);
  await assert.rejects(client.chat.completions.create({ model: "tiny", messages, logprobs: true }), (e: unknown) => e instanceof OpenAI.BadRequestError && /logprobs is not supported by tuna serve/.test(e.message));
  await assert.rejects(client.chat.completions.create({ model: "tiny", messages, tools: [{ type: "function", function: { name: "f" } }] }), (e: unknown) => e instanceof OpenAI.BadRequestError && /tools is not supported/.test(e.message));
  // And still serving.
  assert.ok((await client.completions.create({ model: "tiny", prompt: "hi", max_tokens: 1 })).choices.length === 1);
});

void test("an API key is required when set; a full queue answers 429", async () => {
  const keyed = await startServe({ model: MODEL, adapters: [], values: { device: "cpu", seed: "0" }, servedModelName: "tiny", host: "127.0.0.1", port: 0, apiKey: "s3cret", maxBatch: 2, maxQueue: 0, onNotice: () => undefined });
  try {
    const wrong = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: "nope", maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError);
    const right = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: "s3cret", maxRetries: 0 });
    assert.equal((await right.models.list()).data.length, 1);
    // max_batch 2, max_queue 0: while two requests run, the others arriving with them are refused at once (429), not queued.
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => right.completions.create({ model: "tiny", prompt: `request ${i}`, temperature: 0, max_tokens: 20 })));
    const refused = results.filter((r) => r.status === "rejected");
    assert.ok(results.some((r) => r.status === "fulfilled"), "requests run");
    assert.ok(refused.length > 0, "the others are refused");
    for (const r of refused) assert.ok(r.reason instanceof OpenAI.RateLimitError && /--max_batch 2.*--max_queue 0/.test(r.reason.message), String(r.reason));
  } finally {
    await keyed.close();
  }
});

void test("completions take the prompt as token ids (as OpenAI's API allows); ignore_eos (vLLM's extension) generates exactly max_tokens", async () => {
  const session = await openGenerationSession(MODEL, { device: "cpu", seed: "0" }, "cpu");
  const ids = session.tokenizer.encode("The tuna swims");
  const byText = await client.completions.create({ model: "tiny", prompt: "The tuna swims", temperature: 0, max_tokens: 8 });
  const byIds = await client.completions.create({ model: "tiny", prompt: ids, temperature: 0, max_tokens: 8 });
  assert.equal(byIds.choices[0]!.text, byText.choices[0]!.text);
  assert.equal(byIds.usage?.prompt_tokens, ids.length);
  const long = await client.completions.create({ model: "tiny", prompt: "x", temperature: 0, max_tokens: 40, ignore_eos: true } as OpenAI.Completions.CompletionCreateParamsNonStreaming);
  assert.equal(long.usage?.completion_tokens, 40);
  assert.equal(long.choices[0]!.finish_reason, "length");
  await assert.rejects(client.completions.create({ model: "tiny", prompt: [1, 10 ** 7] }), (e: unknown) => e instanceof OpenAI.BadRequestError && /outside the model's vocabulary/.test(e.message));
});

void test("the next turn of a chat reuses the previous turn's KV cache (prefix cache) and answers as a fresh generation does", async () => {
  const first = await client.chat.completions.create({ model: "alpha", messages, temperature: 0, max_completion_tokens: 12 });
  const reply = first.choices[0]!.message.content!;
  const next: (ChatMessage & OpenAI.Chat.Completions.ChatCompletionMessageParam)[] = [...messages, { role: "assistant" as const, content: reply }, { role: "user" as const, content: "And about salmon?" }];
  const before = server.server.batcher.stats.reusedTokens;
  const second = await client.chat.completions.create({ model: "alpha", messages: next, temperature: 0, max_completion_tokens: 12 });
  const reused = server.server.batcher.stats.reusedTokens - before;
  assert.ok(reused >= 5, `the second turn reused the first turn's prompt (${reused} tokens)`);
  assert.ok(reused < (second.usage?.prompt_tokens ?? 0), "and prefilled the new turn");
  assert.equal(second.choices[0]!.message.content, await expectedReply(adapters[0]!.dir, next));
  // Another model's cache is never taken: the base answers the same conversation as a fresh generation.
  const base = await client.chat.completions.create({ model: "tiny", messages: next, temperature: 0, max_completion_tokens: 12 });
  assert.equal(base.choices[0]!.message.content, await expectedReply(undefined, next));
});
