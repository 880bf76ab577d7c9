// `tuna plan`: a preset shape planned for a GPU budget (the fit verdict and the single changes that would fit),
// JSON output whose parts add up, a launch file's ZeRO-3 halving the layers per rank, and bad input.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { planCommand } from "../../src/cli/commands/plan.ts";
import { memoryOutput } from "../../src/cli/output.ts";
import { isTunaError } from "../../src/util/errors.ts";

const LORA_7B = ["--model_name_or_path", "llama-2-7b", "--dataset_name", "unused.jsonl", "--use_peft_lora", "--lora_r", "16", "--lora_alpha", "32", "--lora_dropout", "0", "--lora_target_modules", "all-linear", "--bf16", "--max_seq_length", "2048", "--per_device_train_batch_size", "1", "--device", "cuda"];

interface PlanJson {
  parts: { name: string; bytes: number }[];
  totalBytes: number;
  budgetBytes: number | null;
  fits: boolean | null;
  alternatives: { change: string; total: number }[];
  ranks: number;
}

async function planJson(args: string[]): Promise<PlanJson> {
  const out = memoryOutput();
  assert.equal(await planCommand([...args, "--json"], out), 0);
  return JSON.parse(out.stdout.join("\n")) as PlanJson;
}

void test("7B LoRA without checkpointing does not fit 16 GiB; checkpointing or QLoRA would, and the text says which", async () => {
  const out = memoryOutput();
  assert.equal(await planCommand([...LORA_7B, "--budget_gib", "16"], out), 0);
  const text = out.stdout.join("\n");
  assert.match(text, /^tuna plan: preset llama-2-7b \(32 layers, hidden 4096, vocab 32000\), LoRA on cuda/);
  assert.match(text, /does not fit in 16\.00 GiB/);
  assert.match(text, /^ {2}fits +[\d.]+ {2}--gradient_checkpointing$/m);
  assert.match(text, /^ {2}fits +[\d.]+ {2}--use_4bit_quantization --use_nested_quant \(QLoRA\)$/m);
  const json = await planJson([...LORA_7B, "--budget_gib", "16"]);
  assert.equal(json.fits, false);
  assert.equal(json.totalBytes, json.parts.reduce((s, p) => s + p.bytes, 0));
  // bf16 LoRA weights of Llama-2-7B's decoder layers: 6.48e9 parameters x 2 bytes, in 2 MiB blocks.
  const layers = json.parts.find((p) => p.name === "layer weights")!.bytes / 2 ** 30;
  assert.ok(Math.abs(layers - 12.06) < 0.01, `layer weights ${layers}`);
});

void test("ZeRO-3 over 2 ranks from a launch file: two gathered layers on the device, the optimizer halved", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tuna-plan-cli-"));
  const config = join(dir, "z3.yaml");
  await writeFile(config, "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 3\nnum_processes: 2\n");
  const one = await planJson([...LORA_7B, "--use_4bit_quantization", "--gradient_checkpointing"]);
  const two = await planJson([...LORA_7B, "--use_4bit_quantization", "--gradient_checkpointing", "--config_file", config]);
  assert.equal(two.ranks, 2);
  const part = (p: PlanJson, name: string): number => p.parts.find((x) => x.name === name)!.bytes;
  assert.ok(Math.abs(part(two, "layer weights") - (2 / 32) * (part(one, "layer weights") + part(one, "quant state") - 224 * 512)) < 2 ** 20);
  assert.ok(Math.abs(part(two, "optimizer") - part(one, "optimizer") / 2) <= 2 * 2 ** 21);
});

void test("a model that is neither a folder nor a preset, and a bad budget, are clear errors", async () => {
  await assert.rejects(planCommand(["--model_name_or_path", "no-such-model", "--dataset_name", "x"], memoryOutput()), (e: unknown) => isTunaError(e) && /neither.*Presets: .*llama-2-70b/s.test(e.message));
  await assert.rejects(planCommand([...LORA_7B, "--budget_gib", "lots"], memoryOutput()), (e: unknown) => isTunaError(e) && /--budget_gib lots: expected a number > 0/.test(e.message));
});

void test("--dpo plans two sequences per pair: the activations of a DPO micro-batch are those of twice the sequences", async () => {
  const withLength = (n: number): string[] => [...LORA_7B.map((f, i) => (LORA_7B[i - 1] === "--max_seq_length" ? String(n) : f)), "--use_4bit_quantization", "--gradient_checkpointing"];
  const sft = await planJson(withLength(1024));
  const dpo = await planJson([...withLength(1024), "--dpo"]);
  const doubled = await planJson(withLength(2048));
  const part = (p: PlanJson, name: string): number => p.parts.find((x) => x.name === name)!.bytes;
  assert.equal(part(dpo, "activations"), part(doubled, "activations"));
  assert.ok(part(dpo, "activations") > 1.9 * part(sft, "activations"));
});
