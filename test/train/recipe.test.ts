import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli, type CliRun } from "../cli/run-cli.ts";

// End to end through the real command: the shipped tiny model, a small chat dataset, LoRA + chatml +
// packing + eval + checkpoints + every report. Small shapes keep each step well under a second.
const root = new URL("../..", import.meta.url).pathname;
const DATA = join(root, "test/fixtures/chat-small.jsonl");
let tmp = "";

const flags = (out: string, extra: string[] = []): string[] => [
  "--model_name_or_path", join(root, "examples/tiny-llama"),
  "--dataset_name", DATA,
  "--splits", "train,test",
  "--test_split_ratio", "0.25",
  "--chat_template_format", "chatml",
  "--assistant_only_loss", "true",
  "--use_peft_lora", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0.1",
  "--lora_target_modules", "all-linear",
  "--packing", "--max_seq_length", "48",
  "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2",
  "--learning_rate", "2e-3", "--lr_scheduler_type", "cosine", "--warmup_ratio", "0.1",
  "--logging_steps", "1", "--eval_strategy", "steps", "--eval_steps", "3",
  "--save_steps", "2", "--save_total_limit", "2",
  "--neftune_noise_alpha", "5", "--seed", "11",
  "--output_dir", out,
  ...extra,
];

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tuna-recipe-"));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const run = (args: string[]): Promise<CliRun> => runCli(["train", ...args]);

interface Metric {
  step: number;
  tokens_per_second?: number;
  loss?: number;
  eval_loss?: number;
  peak_memory_gib?: number;
}
async function metrics(dir: string): Promise<Metric[]> {
  return (await readFile(join(dir, "metrics.jsonl"), "utf8"))
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Metric);
}

test("tuna train end to end: adapter, tokenizer, checkpoints with rotation, metrics, TensorBoard, report, refusal to overwrite", async () => {
  const out = join(tmp, "run");
  const r = await run(flags(out, ["--max_steps", "6", "--report_to", "all"]));
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: \d+\.\d{4}/);
  const files = await readdir(out);
  for (const f of ["adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json", "metrics.jsonl", "report.html", "train_results.json", "trainer_state.json", "runs"]) {
    assert.ok(files.includes(f), `missing ${f} in ${files.join(", ")}`);
  }
  // save_total_limit 2: checkpoint-2 was rotated away.
  assert.deepEqual(files.filter((f) => f.startsWith("checkpoint-")).sort(), ["checkpoint-4", "checkpoint-6"]);
  const adapterConfig = JSON.parse(await readFile(join(out, "adapter_config.json"), "utf8")) as Record<string, unknown>;
  assert.equal(adapterConfig["r"], 4);
  assert.equal(adapterConfig["peft_type"], "LORA");
  assert.deepEqual(adapterConfig["trainable_token_indices"], [32000, 32001, 32002, 32003, 32004]);
  const tokenizerConfig = JSON.parse(await readFile(join(out, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
  assert.equal(tokenizerConfig["eos_token"], "<|im_end|>");
  const m = await metrics(out);
  assert.deepEqual(m.filter((e) => e.loss !== undefined).map((e) => e.step), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(m.filter((e) => e.eval_loss !== undefined).map((e) => e.step), [3, 6]);
  const runs = await readdir(join(out, "runs"));
  assert.equal(runs.length, 1);
  assert.ok((await readdir(join(out, "runs", runs[0]!))).some((f) => f.startsWith("events.out.tfevents.")));
  assert.match(await readFile(join(out, "report.html"), "utf8"), /<svg/);
  // The model card, as the Trainer writes it: hub metadata, results, hyperparameters, the results table.
  const card = await readFile(join(out, "README.md"), "utf8");
  const evalLosses = m.filter((e) => e.eval_loss !== undefined).map((e) => e.eval_loss!);
  assert.match(card, /^---\nlibrary_name: peft\nbase_model: .*tiny-llama.*\ndatasets:\n- .*\ntags:\n- tuna\n- sft\n- lora\n---\n/);
  assert.ok(card.includes(`- Loss: ${Number(evalLosses.at(-1)!.toPrecision(6))}`), card);
  assert.match(card, /^- training_steps: 6$/m);
  assert.match(card, /^\| Training Loss \| Epoch \| Step \| Validation Loss \|$/m);
  assert.equal(card.split("\n").filter((l) => /^\| [\d.]+ \| [\d.]+ \| \d+ \| [\d.]+ \|$/.test(l)).length, 2, "one row per evaluation");

  const again = await run(flags(out, ["--max_steps", "6"]));
  assert.equal(again.code, 1);
  assert.match(again.err, /already holds a finished run/);
});

test("killed with SIGKILL after a checkpoint and resumed: the same losses as an uninterrupted run", { timeout: 240_000 }, async () => {
  const build = spawnSync(process.execPath, ["tools/build.mjs"], { cwd: root, encoding: "utf8" });
  assert.equal(build.status, 0, build.stderr);
  const tuna = (args: string[]) => spawn(process.execPath, ["bin/tuna.js", "train", ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  const wait = (p: ReturnType<typeof tuna>): Promise<number | null> => new Promise((res) => p.on("exit", (code) => { res(code); }));

  const straight = join(tmp, "straight");
  assert.equal(await wait(tuna(flags(straight, ["--max_steps", "8"]))), 0);

  const crashed = join(tmp, "crashed");
  const child = tuna(flags(crashed, ["--max_steps", "8"]));
  // Kill -9 as soon as checkpoint-4 is complete (its trainer_state.json is written last).
  const marker = join(crashed, "checkpoint-4", "trainer_state.json");
  const killed = await new Promise<boolean>((res) => {
    const timer = setInterval(() => {
      if (existsSync(marker)) {
        clearInterval(timer);
        res(child.kill("SIGKILL"));
      }
    }, 5);
    child.on("exit", () => {
      clearInterval(timer);
      res(false);
    });
  });
  await wait(child).catch(() => undefined);
  // Each step takes far longer than the 5 ms poll, so the kill lands mid-run: no final results exist.
  assert.ok(killed, "the run was killed after checkpoint-4");
  assert.equal(existsSync(join(crashed, "train_results.json")), false);

  const resumed = tuna(flags(crashed, ["--max_steps", "8", "--resume_from_checkpoint", join(crashed, "checkpoint-4")]));
  let err = "";
  resumed.stderr.on("data", (d: Buffer) => (err += d.toString()));
  assert.equal(await wait(resumed), 0, err);
  assert.match(err, /resuming from .*checkpoint-4 \(step 4\)/);
  // The peak memory is the process's so far: a resumed process has not yet met the largest batch the
  // uninterrupted one had; tokens_per_second is a wall-clock measure. Everything else is the same run.
  const withoutPeak = (entries: Metric[]): Metric[] =>
    entries.map((e) => {
      const rest = { ...e };
      delete rest.peak_memory_gib;
      delete rest.tokens_per_second;
      return rest;
    });
  const a = await metrics(straight);
  const b = await metrics(crashed);
  assert.ok(a.some((e) => "peak_memory_gib" in e));
  assert.deepEqual(withoutPeak(b), withoutPeak(a));
  const trainLoss = async (dir: string): Promise<number> => (JSON.parse(await readFile(join(dir, "train_results.json"), "utf8")) as { train_loss: number }).train_loss;
  assert.equal(await trainLoss(crashed), await trainLoss(straight));
});

test("bad training input: resume path that is not a checkpoint, unknown flag", async () => {
  const r = await run(flags(join(tmp, "bad"), ["--max_steps", "2", "--resume_from_checkpoint", tmp]));
  assert.equal(r.code, 1);
  assert.match(r.err, /is not a checkpoint/);
  const u = await run(["--lora_rr", "4"]);
  assert.equal(u.code, 1);
  assert.match(u.err, /--lora_r/);
});

test("DoRA end to end: lora_magnitude_vector saved, exact resume from a checkpoint, merge computes the adapter's logits", async () => {
  const dora = ["--use_dora", "True", "--max_steps", "4", "--save_total_limit", "3"];
  const straight = join(tmp, "dora");
  const r = await run(flags(straight, dora));
  assert.equal(r.code, 0, r.err);
  const adapterConfig = JSON.parse(await readFile(join(straight, "adapter_config.json"), "utf8")) as Record<string, unknown>;
  assert.equal(adapterConfig["use_dora"], true);
  const { openWeightsFile } = await import("../../src/io/safetensors/checkpoint.ts");
  const { decodeToFloat32 } = await import("../../src/io/safetensors/convert.ts");
  const weights = await openWeightsFile(join(straight, "adapter_model.safetensors"));
  const names = weights.names().filter((n) => n.endsWith(".lora_magnitude_vector"));
  assert.equal(names.length, 2 * 7, "one magnitude per adapted module of the 2-layer model");
  // Training moved the magnitudes away from the base rows' norms they start at (positive, of the weights' size).
  const name = "base_model.model.model.layers.0.mlp.down_proj.lora_magnitude_vector";
  const magnitude = decodeToFloat32(await weights.readTensor(name), weights.info(name).dtype);
  await weights.close();
  assert.ok(magnitude.every((v) => v > 0));
  const m = await metrics(straight);
  assert.ok(m.every((e) => e.loss === undefined || Number.isFinite(e.loss)));

  const resumed = join(tmp, "dora-resumed");
  const r2 = await run(flags(resumed, [...dora, "--resume_from_checkpoint", join(straight, "checkpoint-2")]));
  assert.equal(r2.code, 0, r2.err);
  const lossesAfter2 = (entries: Metric[]): (number | undefined)[] => entries.filter((e) => e.step > 2 && e.loss !== undefined).map((e) => e.loss);
  assert.deepEqual(lossesAfter2(await metrics(resumed)), lossesAfter2(m));
  assert.deepEqual(await readFile(join(resumed, "adapter_model.safetensors")), await readFile(join(straight, "adapter_model.safetensors")));

  const merged = join(tmp, "dora-merged");
  const mr = await runCli(["merge", join(root, "examples/tiny-llama"), "--adapter", straight, "--output_dir", merged, "--dtype", "float32"]);
  assert.equal(mr.code, 0, mr.err);
});

for (const [family, extra] of [
  ["qwen3", { architectures: ["Qwen3ForCausalLM"], model_type: "qwen3", head_dim: 16, use_sliding_window: true, sliding_window: 16, max_window_layers: 1 }],
  ["gemma2", { architectures: ["Gemma2ForCausalLM"], model_type: "gemma2", head_dim: 16, query_pre_attn_scalar: 16, sliding_window: 16, attn_logit_softcapping: 50, final_logit_softcapping: 30 }],
  ["phi3", { architectures: ["Phi3ForCausalLM"], model_type: "phi3", tie_word_embeddings: false, sliding_window: 16 }],
] as const) test(`${family} end to end: a tiny ${family} trains with QLoRA, generates with its adapter, merges`, async () => {
  const { copyFile, mkdir, readFile: read } = await import("node:fs/promises");
  const { writeRandomModel } = await import("../../src/hf/random-init.ts");
  const base = JSON.parse(await read(join(root, "examples/tiny-llama/config.json"), "utf8")) as Record<string, unknown>;
  const model = join(tmp, `tiny-${family}`);
  await mkdir(model, { recursive: true });
  // The tiny Llama's shapes and vocabulary (so its tokenizer fits) in the family's layout, windows shorter than the data.
  const config = { ...base, ...extra };
  await writeRandomModel(model, config, { seed: 5, dtype: "BF16" });
  for (const f of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) await copyFile(join(root, "examples/tiny-llama", f), join(model, f));
  const out = join(tmp, `${family}-run`);
  const args = flags(out, ["--max_steps", "3", "--use_4bit_quantization", "--use_nested_quant"]).map((f) => (f === join(root, "examples/tiny-llama") ? model : f));
  const r = await run(args);
  assert.equal(r.code, 0, r.err);
  const losses = (await metrics(out)).filter((e) => e.loss !== undefined).map((e) => e.loss!);
  assert.equal(losses.length, 3);
  assert.ok(losses.every(Number.isFinite));
  const g = await runCli(["generate", model, "--adapter", out, "--prompt", "hello", "--max_new_tokens", "4"]);
  assert.equal(g.code, 0, g.err);
  const merged = join(tmp, `${family}-merged`);
  const m = await runCli(["merge", model, "--adapter", out, "--output_dir", merged]);
  assert.equal(m.code, 0, m.err);
  const mergedConfig = JSON.parse(await read(join(merged, "config.json"), "utf8")) as Record<string, unknown>;
  assert.equal(mergedConfig["model_type"], family);
});
