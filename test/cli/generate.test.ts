// `tuna generate` on examples/tiny-llama (random weights): it runs, streams the same text its JSON reports,
// respects max_new_tokens, wraps --chat prompts with the template, stops on generation_config's eos.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadTokenizer, type LoadedTokenizer } from "../../src/tokenizer/load.ts";
import { createBackend } from "../../src/backend/factory.ts";
import { readModelConfig } from "../../src/hf/folder.ts";
import { openModelForUse } from "../../src/train/open-model.ts";
import { createCausalLm } from "../../src/model/causal-lm/model.ts";
import { createDecoder } from "../../src/model/causal-lm/decode.ts";
import { generate } from "../../src/model/generate.ts";
import { writeAdapter } from "../../src/lora/adapter-files.ts";
import { initLoraWeights } from "../../src/lora/init.ts";
import { makeLoraSettings } from "../../src/lora/settings.ts";
import { createRng } from "../../src/util/random.ts";
import { runCli, type CliRun } from "./run-cli.ts";

const example = new URL("../../examples/tiny-llama", import.meta.url).pathname;
let root = "";
let tokenizer: LoadedTokenizer;

before(async () => {
  root = await mkdtemp(join(tmpdir(), "tuna-generate-"));
  tokenizer = await loadTokenizer(example);
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

const run = (...args: string[]): Promise<CliRun> => runCli(args);

interface GenerateJson {
  prompt_tokens: number;
  completion: string;
  tokens: number[];
  new_tokens: number;
  finish_reason: string;
  max_new_tokens: number;
  eos_token_ids: number[];
  sampling: { do_sample: boolean; temperature: number; top_k: number; top_p: number; repetition_penalty: number; seed: number };
  decode_tokens_per_second: number;
}

async function runJson(...args: string[]): Promise<GenerateJson> {
  const r = await run("generate", ...args, "--json");
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out) as GenerateJson;
}

/** A copy of the example model with some files rewritten. */
async function exampleCopy(name: string, edit: (dir: string) => Promise<void>): Promise<string> {
  const dir = join(root, name);
  await cp(example, dir, { recursive: true });
  await edit(dir);
  return dir;
}

void test("generate streams text, and --json reports the same greedy tokens with every field", async () => {
  const prompt = "Once upon a time";
  const j = await runJson(example, "--prompt", prompt, "--max_new_tokens", "7");
  assert.equal(j.new_tokens, 7);
  assert.equal(j.tokens.length, 7);
  assert.equal(j.finish_reason, "length");
  assert.equal(j.max_new_tokens, 7);
  // The tokenizer adds BOS to a plain prompt, as transformers' pipeline does.
  assert.equal(j.prompt_tokens, tokenizer.encode(prompt).length);
  assert.equal(j.completion, tokenizer.decode(j.tokens, { skipSpecialTokens: true }));
  assert.deepEqual(j.eos_token_ids, [2]);
  assert.deepEqual(j.sampling, { do_sample: false, temperature: 1, top_k: 50, top_p: 1, repetition_penalty: 1, seed: 0 });
  assert.ok(j.tokens.every((t) => Number.isInteger(t) && t >= 0 && t < 32000));
  assert.ok(j.decode_tokens_per_second > 0);

  const streamed = await run("generate", example, "--prompt", prompt, "--max-new-tokens", "7");
  assert.equal(streamed.code, 0, streamed.err);
  assert.equal(streamed.out, j.completion);
  assert.match(streamed.err, /7 new tokens, finish: length/);
  assert.match(streamed.err, /greedy/);
});

void test("sampling follows --seed; greedy ignores it; --temperature 0 is greedy", async () => {
  const base = [example, "--prompt", "Hello", "--max_new_tokens", "6"];
  const greedy = await runJson(...base);
  assert.deepEqual((await runJson(...base, "--seed", "9")).tokens, greedy.tokens);
  assert.deepEqual((await runJson(...base, "--temperature", "0")).tokens, greedy.tokens);
  const a = await runJson(...base, "--do_sample", "--seed", "1");
  const b = await runJson(...base, "--temperature", "1", "--seed", "1");
  const c = await runJson(...base, "--do_sample", "--seed", "2", "--top_k", "0", "--top_p", "0.95", "--repetition_penalty", "1.2");
  assert.equal(a.sampling.do_sample, true);
  assert.deepEqual(b.tokens, a.tokens);
  assert.notDeepEqual(c.tokens, a.tokens);
  assert.deepEqual(c.sampling, { do_sample: true, temperature: 1, top_k: 0, top_p: 0.95, repetition_penalty: 1.2, seed: 2 });
});

void test("--chat wraps the prompt as one user message through the chat template, with --system", async () => {
  const j = await runJson(example, "--prompt", "Hi there", "--chat", "--system", "Be brief.", "--max_new_tokens", "3");
  const rendered = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n";
  // apply_chat_template tokenizes without adding special tokens: the template owns them.
  assert.equal(j.prompt_tokens, tokenizer.encode(rendered, { addSpecialTokens: false }).length);
  assert.equal(j.new_tokens, 3);
});

void test("generation stops at an eos id from generation_config.json", async () => {
  // Sampled (greedy repeats one token on these random weights); the same seed gives the same draws.
  const args = ["--prompt", "The cat", "--max_new_tokens", "12", "--do_sample", "--seed", "3"];
  const free = await runJson(example, ...args);
  // A token not seen before it, so the run can only stop there.
  const k = free.tokens.findIndex((t, i) => i >= 3 && !free.tokens.slice(0, i).includes(t));
  assert.ok(k >= 3, free.tokens.join(","));
  const stopAt = free.tokens[k]!;
  const dir = await exampleCopy("eos", async (d) => {
    await writeFile(join(d, "generation_config.json"), JSON.stringify({ bos_token_id: 1, eos_token_id: [stopAt, 2] }));
  });
  const stopped = await runJson(dir, ...args);
  assert.equal(stopped.finish_reason, "eos");
  assert.deepEqual(stopped.tokens, free.tokens.slice(0, k + 1));
  assert.equal(stopped.completion, tokenizer.decode(free.tokens.slice(0, k), { skipSpecialTokens: true }));
});

void test("sampling defaults come from generation_config.json; flags override them", async () => {
  const dir = await exampleCopy("sampling", async (d) => {
    await writeFile(join(d, "generation_config.json"), JSON.stringify({ eos_token_id: 2, do_sample: true, temperature: 0.6, top_p: 0.9, max_new_tokens: 4 }));
  });
  const j = await runJson(dir, "--prompt", "Hello");
  assert.deepEqual(j.sampling, { do_sample: true, temperature: 0.6, top_k: 50, top_p: 0.9, repetition_penalty: 1, seed: 0 });
  assert.equal(j.new_tokens, 4);
  const flags = await runJson(dir, "--prompt", "Hello", "--temperature", "0", "--max_new_tokens", "2");
  assert.equal(flags.sampling.do_sample, false);
  assert.equal(flags.new_tokens, 2);
});

void test("a model without a chat template: --chat says what to do, and --chat_template supplies one", async () => {
  const dir = await exampleCopy("no-template", async (d) => {
    const path = join(d, "tokenizer_config.json");
    const config = JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
    delete config["chat_template"];
    await writeFile(path, JSON.stringify(config));
  });
  const r = await run("generate", dir, "--prompt", "Hi", "--chat");
  assert.equal(r.code, 1);
  assert.match(r.err, /CONFIG_INVALID.*has no chat template.*--chat_template FILE/s);
  const template = join(root, "user-assistant.jinja");
  await writeFile(template, "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}");
  const j = await runJson(dir, "--prompt", "Hi", "--chat", "--chat_template", template, "--max_new_tokens", "2");
  assert.equal(j.prompt_tokens, tokenizer.encode("user: Hi\nassistant:", { addSpecialTokens: false }).length);
});

void test("--adapter applies a PEFT adapter: the same draws as the library's decoder with it, unlike the base", async () => {
  const cfg = await readModelConfig(example);
  const settings = makeLoraSettings({ r: 4, alpha: 8, dropout: 0.1, targetModules: ["q_proj", "v_proj", "down_proj"] }, cfg);
  const params = initLoraWeights(settings, cfg, createRng(3));
  // B starts at zero (PEFT's init); give it values so the adapter changes the model.
  const rng = createRng(4);
  for (let i = 0; i < params.flat.length; i++) if (params.flat[i] === 0) params.flat[i] = 0.3 * rng.normal();
  const adapter = join(root, "adapter");
  await writeAdapter(adapter, { settings, params, embeddings: null });
  const args = ["--prompt", "Tell me", "--max_new_tokens", "6", "--do_sample", "--seed", "5"];
  const withAdapter = await runJson(example, "--adapter", adapter, ...args);
  const base = await runJson(example, ...args);
  assert.notDeepEqual(withAdapter.tokens, base.tokens);
  const backend = createBackend("cpu");
  const opened = await openModelForUse(backend, example, { baseDtype: "f32", adapterDir: adapter });
  const decoder = createDecoder(createCausalLm(backend, opened.params, { checkpointing: false, seed: 0 }));
  const sampling = { doSample: true, temperature: 1, topK: 50, topP: 1, repetitionPenalty: 1 };
  const r = await generate(decoder, tokenizer.encode("Tell me"), { maxNewTokens: 6, eosTokenIds: [2], sampling, rng: createRng(5) });
  assert.deepEqual(withAdapter.tokens, r.tokens);
});

void test("bad flags are reported together, and --help describes the command", async () => {
  const r = await run("generate", example, "--top_p", "x", "--max_new_tokens", "0", "--system", "s");
  assert.equal(r.code, 1);
  for (const part of ["--prompt is required", "--top_p must be a number", "--max_new_tokens must be an integer >= 1", "--system and --chat_template need --chat"]) {
    assert.ok(r.err.includes(part), `${part} missing from: ${r.err}`);
  }
  const range = await run("generate", example, "--prompt", "a", "--top_p", "1.5");
  assert.equal(range.code, 1);
  assert.match(range.err, /top_p must be in \(0, 1\]/);
  const unknown = await run("generate", example, "--prompt", "a", "--frobnicate");
  assert.equal(unknown.code, 1);
  assert.match(unknown.err, /CONFIG_UNKNOWN/);
  const help = await run("generate", "--help");
  assert.equal(help.code, 0);
  assert.match(help.out, /--repetition_penalty/);
});

void test("generation stops at the model's context (max_position_embeddings) and says so; a prompt past it is refused", async () => {
  const prompt = "The quick brown fox";
  const promptTokens = tokenizer.encode(prompt).length;
  const limit = promptTokens + 3;
  const small = await exampleCopy("short-context", async (dir) => {
    const config = JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    config["max_position_embeddings"] = limit;
    await writeFile(join(dir, "config.json"), JSON.stringify(config));
    // No eos, so only a length limit can stop it.
    await writeFile(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: [] }));
  });
  const r = await runJson(small, "--prompt", prompt, "--max_new_tokens", "20");
  assert.equal(r.prompt_tokens, promptTokens);
  assert.equal(r.new_tokens, 3);
  assert.equal((r as unknown as { context_limited: boolean }).context_limited, true);
  const streamed = await run("generate", small, "--prompt", prompt, "--max_new_tokens", "20");
  assert.equal(streamed.code, 0, streamed.err);
  assert.match(streamed.err, new RegExp(`stopped at the model's context of ${limit} tokens`));
  const long = await run("generate", small, "--prompt", `${prompt} ${prompt} ${prompt}`, "--max_new_tokens", "2");
  assert.equal(long.code, 1);
  assert.match(long.err, new RegExp(`the model's context \\(max_position_embeddings\\) is ${limit}`));
});
