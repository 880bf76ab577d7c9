import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { openGguf, metadataReader } from "../../src/io/gguf/reader.ts";
import { TINY, writeTiny } from "../model/causal-lm/tiny-model.ts";
import { runCli, type CliRun } from "./run-cli.ts";

const DEMO = new URL("../../examples/demo/base-model/", import.meta.url).pathname;
let root = "";
before(async () => {
  root = await mkdtemp(join(tmpdir(), "tuna-export-cli-"));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});
const run = (...args: string[]): Promise<CliRun> => runCli(args);

test("export writes a GGUF file (f16 by default) with the model's metadata, tokenizer and chat template; --json describes it", async () => {
  const out = join(root, "demo.gguf");
  const r = await run("export", DEMO, "--format", "gguf", "--output", out);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /wrote .*demo\.gguf \(0\.\d MiB; llama, 20 tensors: 15 F16, 5 F32; gpt2 tokenizer\)/);
  const f = await openGguf(out);
  const m = metadataReader(f);
  assert.equal(m.str("general.architecture"), "llama");
  assert.equal(m.num("general.file_type"), 1);
  assert.equal(m.num("llama.block_count"), 2);
  assert.match(m.str("tokenizer.chat_template"), /<\|im_start\|>/);
  assert.equal(m.num("tokenizer.ggml.eos_token_id"), 5);
  await f.close();

  const j = await run("export", DEMO, "--format", "GGUF", "--outtype", "q8_0", "--output", join(root, "demo-q8.gguf"), "--json", "--name", "demo");
  assert.equal(j.code, 0, j.err);
  const parsed = JSON.parse(j.out) as { outtype: string; types: Record<string, number>; tensors: number };
  assert.equal(parsed.outtype, "q8_0");
  assert.deepEqual(parsed.types, { Q8_0: 15, F32: 5 });
});

test("bad flags are refused with every problem named; an existing file is kept without --overwrite", async () => {
  const none = await run("export", DEMO);
  assert.equal(none.code, 1);
  assert.match(none.err, /--format is required.*--output is required/);
  const fmt = await run("export", DEMO, "--format", "onnx", "--output", join(root, "x"));
  assert.match(fmt.err, /--format onnx is not available; the format tuna exports is gguf/);
  const type = await run("export", DEMO, "--format", "gguf", "--output", join(root, "x.gguf"), "--outtype", "q2_k");
  assert.match(type.err, /--outtype must be one of f32, f16, bf16, q8_0, q4_k_m, got "q2_k"/);

  const existing = join(root, "existing.gguf");
  await writeFile(existing, "keep me");
  const kept = await run("export", DEMO, "--format", "gguf", "--output", existing);
  assert.equal(kept.code, 1);
  assert.match(kept.err, /CONFIG_INVALID.*exists; pass --overwrite/);
  assert.equal(await readFile(existing, "utf8"), "keep me");
  const replaced = await run("export", DEMO, "--format", "gguf", "--output", existing, "--overwrite");
  assert.equal(replaced.code, 0, replaced.err);

  const folder = join(root, "a-folder");
  await mkdir(folder);
  assert.match((await run("export", DEMO, "--format", "gguf", "--output", folder)).err, /is a folder; give a file path/);
  assert.match((await run("export", DEMO, "--format", "gguf", "--output", join(DEMO, "inside.gguf"))).err, /inside the base model folder/);
});

test("a Gemma that llama.cpp would compute differently is refused, saying why, and nothing is written", async () => {
  for (const [config, why] of [
    [{ ...TINY, model_type: "gemma2", head_dim: 8, query_pre_attn_scalar: 32 }, /scales attention by 0\.17677.*llama\.cpp assumes 0\.35355/],
    [{ ...TINY, model_type: "gemma2", head_dim: 8, query_pre_attn_scalar: 8, tie_word_embeddings: false }, /has its own lm_head.*always reuses the input embedding/],
  ] as const) {
    const { dir } = await writeTiny(config);
    const out = join(root, "gemma.gguf");
    const r = await run("export", dir, "--format", "gguf", "--output", out);
    await rm(dirname(dir), { recursive: true, force: true });
    assert.equal(r.code, 1);
    assert.match(r.err, /UNSUPPORTED/);
    assert.match(r.err, why);
    await assert.rejects(readFile(out));
  }
});

test("a .gguf file is a model: tuna inspect reads its architecture from the metadata", async () => {
  const out = join(root, "inspect.gguf");
  assert.equal((await run("export", DEMO, "--format", "gguf", "--output", out, "--outtype", "f32")).code, 0);
  const r = await run("inspect", out);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /llama/);
  assert.match(r.out, /2 layers|layers\s+2|num_hidden_layers/i);
});

test("--adapter_only: needs --adapter; a DoRA adapter is refused with the merged export as the way out", async () => {
  assert.match((await run("export", DEMO, "--format", "gguf", "--output", join(root, "a.gguf"), "--adapter_only")).err, /--adapter_only needs --adapter DIR/);
  const { writeAdapter } = await import("../../src/lora/adapter-files.ts");
  const { allocateLoraParams } = await import("../../src/lora/init.ts");
  const { loraLayout } = await import("../../src/lora/layout.ts");
  const { makeLoraSettings } = await import("../../src/lora/settings.ts");
  const { readModelConfig } = await import("../../src/hf/folder.ts");
  const cfg = await readModelConfig(DEMO);
  const settings = makeLoraSettings({ r: 2, alpha: 4, targetModules: ["q_proj"], useDora: true }, cfg);
  const dora = join(root, "dora");
  await writeAdapter(dora, { settings, params: allocateLoraParams(loraLayout(settings, cfg)), embeddings: null });
  const r = await run("export", DEMO, "--adapter", dora, "--adapter_only", "--format", "gguf", "--output", join(root, "dora.gguf"));
  assert.equal(r.code, 1);
  assert.match(r.err, /UNSUPPORTED.*is a DoRA adapter.*export the merged model instead/);
  const merged = await run("export", DEMO, "--adapter", dora, "--format", "gguf", "--output", join(root, "dora-merged.gguf"));
  assert.equal(merged.code, 0, merged.err);
  assert.match(merged.out, /1 LoRA module\(s\) merged|2 LoRA module\(s\) merged/);
});

test("tuna generate takes the .gguf file: the same greedy text as from the model folder", async () => {
  const file = join(root, "gen.gguf");
  assert.equal((await run("export", DEMO, "--format", "gguf", "--output", file, "--outtype", "f32")).code, 0);
  const args = ["--chat", "--prompt", "reverse: apple tree stone", "--max_new_tokens", "16", "--json"];
  const fromFolder = await run("generate", DEMO, ...args);
  const fromGguf = await run("generate", file, ...args);
  assert.equal(fromFolder.code, 0, fromFolder.err);
  assert.equal(fromGguf.code, 0, fromGguf.err);
  const text = (r: CliRun): unknown => (JSON.parse(r.out) as { text: unknown; tokens?: unknown }).text;
  assert.equal(text(fromGguf), text(fromFolder));
});

test("progress of a long write: a stderr line at most every interval, and always the last", async () => {
  const { memoryOutput, throttledProgress } = await import("../../src/cli/output.ts");
  const out = memoryOutput();
  let clock = 0;
  const report = throttledProgress(out, "export", 2000, () => clock);
  for (let i = 0; i < 10; i++) {
    clock = i * 700; // 0, 700, ..., 6300 ms
    report({ name: `t${i}`, index: i, total: 10 });
  }
  assert.deepEqual(out.stderr, ["export: 1/10 tensors (t0)", "export: 4/10 tensors (t3)", "export: 7/10 tensors (t6)", "export: 10/10 tensors (t9)"]);
});
