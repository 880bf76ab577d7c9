// The memory planner against what the CPU backend really allocates: for a grid of training settings on the
// shipped tiny model, rank 0's predicted peak (tensors alone, as the CPU counts them) must match the peak the run
// logs (peak_memory_gib, rounded to 1e-3 GiB) within 2%, including ZeRO-2/3 jobs of real processes. The planner
// plans for full micro-batches (batch x max_seq_length tokens); the runs make them full: wrapped packing cuts
// the concatenated rows at exactly max_seq_length, and without packing every row is longer than it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseTrainArgs } from "../../src/config/index.ts";
import { planTraining } from "../../src/train/plan/from-config.ts";
import { planTargetFor } from "../../src/train/plan/target.ts";
import { freePort } from "../dist/free-port.ts";

const root = resolve(import.meta.dirname, "../..");
let tmp = "";
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tuna-plan-"));
  // The fixture twice: wrapped packing makes 17 full sequences of 64 and one partial one, so of two steps of
  // up to 8 sequences at least one is all full (the peak is that of the largest micro-batch).
  const rows = await readFile(join(root, "test/fixtures/chat-small.jsonl"), "utf8");
  await writeFile(join(tmp, "rows.jsonl"), rows + rows);
  const build = spawnSync(process.execPath, ["tools/build.mjs"], { cwd: root, encoding: "utf8" });
  assert.equal(build.status, 0, build.stderr);
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const base = (out: string): string[] => [
  "--model_name_or_path", join(root, "examples/tiny-llama"),
  "--dataset_name", join(tmp, "rows.jsonl"),
  "--splits", "train",
  "--chat_template_format", "chatml",
  "--max_seq_length", "64", "--packing", "--packing_strategy", "wrapped", "--logging_steps", "1", "--max_steps", "2",
  "--save_strategy", "no", "--report_to", "none", "--device", "cpu", "--output_dir", out,
];

const CASES: { label: string; flags: string[]; world?: { processes: number; sharding: string } }[] = [
  { label: "LoRA, dropout (masks kept), batch 8", flags: ["--use_peft_lora"] },
  { label: "LoRA r 16, gradient checkpointing, batch 4, no packing (every row cut to 16 tokens)", flags: ["--use_peft_lora", "--lora_r", "16", "--gradient_checkpointing", "--per_device_train_batch_size", "4", "--packing", "false", "--max_seq_length", "16"] },
  { label: "QLoRA NF4 + double quant, bf16 base", flags: ["--use_peft_lora", "--use_4bit_quantization", "--use_nested_quant", "--bf16", "--lora_dropout", "0"] },
  { label: "8-bit base", flags: ["--use_peft_lora", "--use_8bit_quantization"] },
  { label: "DoRA with dropout (the weight scratch, the two kept terms per module, the row norms)", flags: ["--use_peft_lora", "--use_dora", "True"] },
  { label: "full fine-tuning, batch 2", flags: ["--per_device_train_batch_size", "2"] },
  { label: "evaluation batch larger than the training batch", flags: ["--use_peft_lora", "--per_device_train_batch_size", "2", "--splits", "train,test", "--eval_strategy", "steps", "--eval_steps", "1", "--per_device_eval_batch_size", "6"] },
  { label: "ZeRO-2 on 3 ranks (optimizer shard)", flags: ["--use_peft_lora", "--per_device_train_batch_size", "2"], world: { processes: 3, sharding: "deepspeed_config:\n  zero_stage: 2\ndistributed_type: DEEPSPEED" } },
  { label: "ZeRO-3 QLoRA on 2 ranks (two gathered layers)", flags: ["--use_peft_lora", "--use_4bit_quantization", "--per_device_train_batch_size", "2", "--gradient_checkpointing"], world: { processes: 2, sharding: "deepspeed_config:\n  zero_stage: 3\ndistributed_type: DEEPSPEED" } },
];

for (const [i, c] of CASES.entries()) {
  void test(`plan vs the CPU's count: ${c.label}`, { timeout: 120_000 }, async () => {
    const out = join(tmp, `run-${i}`);
    const args = [...base(out), ...c.flags];
    if (c.flags.includes("train,test")) {
      const data = join(tmp, `data-${i}`);
      const { mkdir } = await import("node:fs/promises");
      await mkdir(data, { recursive: true });
      const rows = await readFile(join(tmp, "rows.jsonl"), "utf8");
      await writeFile(join(data, "train.jsonl"), rows);
      await writeFile(join(data, "test.jsonl"), rows);
      args[args.indexOf(join(tmp, "rows.jsonl"))] = data;
    }
    if (c.world !== undefined) {
      const config = join(tmp, `launch-${i}.yaml`);
      await writeFile(config, `compute_environment: LOCAL_MACHINE\n${c.world.sharding}\nnum_processes: ${c.world.processes}\nmain_process_port: ${await freePort()}\n`);
      args.push("--config_file", config);
    }
    const r = spawnSync(process.execPath, ["bin/tuna.js", "train", ...args], { cwd: root, encoding: "utf8", timeout: 110_000 });
    assert.equal(r.status, 0, r.stderr);
    // The last training log: its peak covers every step and evaluation before it.
    const entries = (await readFile(join(out, "metrics.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as Record<string, number>);
    const entry = entries.filter((e) => "loss" in e).at(-1)!;
    const measured = (c.world === undefined ? entry.peak_memory_gib : entry.peak_memory_gib_rank_0)!;
    assert.ok(measured > 0, JSON.stringify(entry));
    const resolved = await parseTrainArgs(args);
    const { target } = await planTargetFor(resolved.config, "cpu", 0);
    const predicted = planTraining(resolved.config, resolved.launch, target).total / 2 ** 30;
    const error = Math.abs(predicted - measured) / measured;
    assert.ok(error < 0.02, `predicted ${predicted.toFixed(4)} GiB, measured ${measured} GiB (${(100 * error).toFixed(1)}%)`);
  });
}
