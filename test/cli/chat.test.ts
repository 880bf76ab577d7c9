// `tuna chat` on examples/tiny-llama with piped (non-TTY) input: two turns then /exit, each reply equal to
// a fresh generation over the rendered conversation; /reset, end of input, a missing template, a real pipe.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { runChat } from "../../src/cli/commands/chat.ts";
import { memoryOutput } from "../../src/cli/output.ts";
import { createBackend } from "../../src/backend/factory.ts";
import { openModelForUse } from "../../src/train/open-model.ts";
import { createCausalLm } from "../../src/model/causal-lm/model.ts";
import { createDecoder } from "../../src/model/causal-lm/decode.ts";
import { generate } from "../../src/model/generate.ts";
import { GREEDY } from "../../src/model/sampling.ts";
import { renderChatTemplate, type ChatMessage } from "../../src/tokenizer/chat-template.ts";
import { loadTokenizer, type LoadedTokenizer } from "../../src/tokenizer/load.ts";
import { createRng } from "../../src/util/random.ts";

const example = new URL("../../examples/tiny-llama", import.meta.url).pathname;
const repo = new URL("../..", import.meta.url).pathname;
let root = "";
let tokenizer: LoadedTokenizer;

before(async () => {
  root = await mkdtemp(join(tmpdir(), "tuna-chat-"));
  tokenizer = await loadTokenizer(example);
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function chat(lines: string[], ...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const o = memoryOutput();
  const code = await runChat([example, ...args], o, Readable.from(lines.map((l) => `${l}\n`)));
  return { code, out: o.stdout.join("\n"), err: o.stderr.join("\n") };
}

/**
 * The reference, built without the chat command: render the conversation with the template as
 * transformers would, then greedy-generate from a fresh decoder; returns the reply text.
 */
async function referenceReply(messages: ChatMessage[], maxNewTokens: number): Promise<string> {
  const backend = createBackend("cpu");
  const opened = await openModelForUse(backend, example, { baseDtype: "f32" });
  const text = renderChatTemplate(tokenizer.chatTemplate!, messages, { addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>", unkToken: "<unk>" });
  const decoder = createDecoder(createCausalLm(backend, opened.params, { checkpointing: false, seed: 0 }));
  const r = await generate(decoder, tokenizer.encode(text, { addSpecialTokens: false }), { maxNewTokens, eosTokenIds: [2], sampling: GREEDY, rng: createRng(0) });
  return tokenizer.decode(r.finishReason === "eos" ? r.tokens.slice(0, -1) : r.tokens, { skipSpecialTokens: true });
}

void test("two piped turns then /exit: each reply continues the whole conversation, lines after /exit are ignored", async () => {
  const r = await chat(["Hello there", "", "And then?", "/exit", "never read"], "--max_new_tokens", "5", "--system", "You are terse.");
  assert.equal(r.code, 0, r.err);
  const system: ChatMessage = { role: "system", content: "You are terse." };
  const first = await referenceReply([system, { role: "user", content: "Hello there" }], 5);
  const second = await referenceReply(
    [system, { role: "user", content: "Hello there" }, { role: "assistant", content: first }, { role: "user", content: "And then?" }],
    5,
  );
  // Each reply is streamed and then ends its line; the empty input line is skipped.
  assert.equal(r.out, `${first}\n${second}`);
});

void test("/reset forgets the conversation, end of input exits cleanly", async () => {
  const r = await chat(["Hi", "/reset", "Hi"], "--max_new_tokens", "4");
  assert.equal(r.code, 0, r.err);
  const reply = await referenceReply([{ role: "user", content: "Hi" }], 4);
  assert.equal(r.out, `${reply}\n${reply}`);
  assert.match(r.err, /conversation reset/);
  const empty = await chat([]);
  assert.equal(empty.code, 0);
  assert.equal(empty.out, "");
});

void test("chat with a model without a chat template asks for --chat_template", async () => {
  const dir = join(root, "no-template");
  await cp(example, dir, { recursive: true });
  const path = join(dir, "tokenizer_config.json");
  const config = JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
  delete config["chat_template"];
  await writeFile(path, JSON.stringify(config));
  const o = memoryOutput();
  await assert.rejects(runChat([dir], o, Readable.from(["Hi\n"])), /has no chat template.*--chat_template FILE/s);
});

void test("tuna chat as a process reads piped stdin (not a TTY) and exits on /exit", async () => {
  const script = join(root, "run-tuna.mts");
  await writeFile(script, `import { main } from ${JSON.stringify(join(repo, "src/cli/main.ts"))};\nprocess.exitCode = await main(process.argv.slice(2));\n`);
  const run = spawnSync(process.execPath, ["--import", "tsx", script, "chat", example, "--max_new_tokens", "3"], {
    cwd: repo,
    input: "Hello there\nAnd then?\n/exit\n",
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(run.status, 0, run.stderr);
  const first = await referenceReply([{ role: "user", content: "Hello there" }], 3);
  const second = await referenceReply([{ role: "user", content: "Hello there" }, { role: "assistant", content: first }, { role: "user", content: "And then?" }], 3);
  assert.equal(run.stdout, `${first}\n${second}\n`);
});
