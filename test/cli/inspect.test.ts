import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile, cp, truncate, stat, readFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli, type CliRun } from "./run-cli.ts";

const example = new URL("../../examples/tiny-llama", import.meta.url).pathname;
let root = "";
before(async () => {
  root = await mkdtemp(join(tmpdir(), "tuna-inspect-"));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

const run = (...args: string[]): Promise<CliRun> => runCli(args);

test("inspect the shipped example: architecture, counts, memory, tokenizer", async () => {
  const r = await run("inspect", example);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /LlamaForCausalLM/);
  assert.match(r.out, /4 query, 2 key\/value \(head_dim 16, grouped-query\)/);
  // 32000*64 embedding (tied) + 2 layers * (q 4096 + k 2048 + v 2048 + o 4096 + 3*64*176 + 128) + 64
  const expected = 32000 * 64 + 2 * (4096 + 2048 + 2048 + 4096 + 3 * 64 * 176 + 128) + 64;
  assert.ok(r.out.includes(expected.toLocaleString("en-US")), r.out);
  assert.match(r.out, /chat template\s+present/);
  assert.match(r.out, /bos <s> \(1\), eos <\/s> \(2\)/);
  assert.match(r.out, /BF16/);
});

test("inspect --json is one parseable object with the same facts", async () => {
  const r = await run("inspect", example, "--json");
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out) as { model: { parameters: { total: number }; kvHeads: number; stored: { files: number } }; tokenizer: { vocabSize: number; chatTemplate: boolean } };
  assert.equal(j.model.kvHeads, 2);
  assert.equal(j.model.stored.files, 1);
  assert.equal(j.tokenizer.vocabSize, 32000);
  assert.equal(j.tokenizer.chatTemplate, true);
});

test("inspect --preset llama-2-7b needs no weights", async () => {
  const r = await run("inspect", "--preset", "llama-2-7b", "--json");
  assert.equal(r.code, 0, r.err);
  assert.equal((JSON.parse(r.out) as { model: { parameters: { total: number } } }).model.parameters.total, 6_738_415_616);
});

/** A user mistake: exit 1, one error line naming the problem, no stack trace. */
async function userError(args: string[], code: string, fragment: string): Promise<void> {
  const r = await run(...args);
  assert.equal(r.code, 1, `expected exit 1, got ${r.code}: ${r.err}`);
  assert.ok(r.err.includes(`[${code}]`), r.err);
  assert.ok(r.err.includes(fragment), `stderr lacks "${fragment}": ${r.err}`);
  assert.doesNotMatch(r.err, /\n\s+at /, "no stack trace for a user mistake");
}

test("bad input: each a clear message and exit 1", async () => {
  await userError(["inspect", join(root, "missing-model")], "FILE_NOT_FOUND", "missing-model");
  const empty = join(root, "not-a-model");
  await mkdir(empty);
  await userError(["inspect", empty], "MODEL_INVALID", "no config.json");

  const unsupported = join(root, "unsupported");
  await cp(example, unsupported, { recursive: true });
  const cfg = JSON.parse(await readFile(join(unsupported, "config.json"), "utf8")) as Record<string, unknown>;
  await writeFile(join(unsupported, "config.json"), JSON.stringify({ ...cfg, model_type: "falcon" }));
  await userError(["inspect", unsupported], "MODEL_UNSUPPORTED", '"falcon"');
  await writeFile(join(unsupported, "config.json"), JSON.stringify({ ...cfg, rms_norm_eps: "small" }));
  await userError(["inspect", unsupported], "MODEL_INVALID", "rms_norm_eps");

  const corrupt = join(root, "corrupt");
  await cp(example, corrupt, { recursive: true });
  const st = join(corrupt, "model.safetensors");
  await truncate(st, (await stat(st)).size - 1000);
  await userError(["inspect", corrupt], "FILE_FORMAT", "model.safetensors");

  const badTok = join(root, "bad-tokenizer");
  await cp(example, badTok, { recursive: true });
  await writeFile(join(badTok, "tokenizer.json"), '{"model": ');
  await userError(["inspect", badTok], "FILE_FORMAT", "tokenizer.json");
});

test("a model without a tokenizer is still inspected, and says so", async () => {
  const dir = join(root, "no-tokenizer");
  await cp(example, dir, { recursive: true });
  await rm(join(dir, "tokenizer.json"));
  await rm(join(dir, "tokenizer_config.json"));
  const r = await run("inspect", dir);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /tokenizer: none/);
});

test("unknown command and unknown inspect flag", async () => {
  const r = await run("inspekt");
  assert.equal(r.code, 2);
  assert.match(r.err, /unknown command 'inspekt'/);
  await userError(["inspect", example, "--jsn"], "CONFIG_UNKNOWN", "--jsn");
});
