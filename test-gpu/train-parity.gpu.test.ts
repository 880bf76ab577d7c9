// `tuna train` on the GPU against the same run on the CPU reference: 20 steps of a small model (the
// shipped tiny-llama, chatml, packing, assistant-only loss), loss curves compared step by step; then the
// GPU-trained adapter is loaded by PEFT in Python where python3 + peft exist (the GPU machine).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { main } from "../src/cli/main.ts";
import { memoryOutput } from "../src/cli/output.ts";
import { createCpuBackend } from "../src/backend/cpu/index.ts";
import { batchFromDocuments } from "../src/data/batch.ts";
import { openModelForUse } from "../src/train/open-model.ts";
import { createCausalLm, forward, lastLogits, uploadBatch } from "../src/model/causal-lm/model.ts";
import { packageRoot } from "../src/util/package-root.ts";

const root = packageRoot(import.meta.url);
const MODEL = join(root, "examples/tiny-llama");
let tmp = "";
/** TUNA_PARITY_GPU=cpu dry-runs the whole file on a machine without a GPU (both sides on the CPU). */
const GPU = process.env.TUNA_PARITY_GPU ?? "cuda";

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tuna-gpu-train-"));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const flags = (device: string, out: string, extra: string[]): string[] => [
  "--model_name_or_path", MODEL,
  "--dataset_name", join(root, "test/fixtures/chat-small.jsonl"),
  "--splits", "train",
  "--chat_template_format", "chatml",
  "--assistant_only_loss", "true",
  "--use_peft_lora", "--lora_r", "8", "--lora_alpha", "16", "--lora_dropout", "0",
  "--lora_target_modules", "all-linear",
  "--packing", "--max_seq_length", "64",
  "--per_device_train_batch_size", "2",
  "--learning_rate", "2e-3", "--lr_scheduler_type", "cosine",
  "--max_steps", "20", "--logging_steps", "1", "--save_strategy", "no",
  "--seed", "7", "--device", device,
  "--output_dir", out,
  ...extra,
];

async function train(device: string, name: string, extra: string[]): Promise<{ losses: number[]; peak: number | undefined; dir: string }> {
  const dir = join(tmp, name);
  const o = memoryOutput();
  const code = await main(["train", ...flags(device, dir, extra)], o);
  assert.equal(code, 0, `${name}: ${o.stderr.join("\n")}`);
  const lines = (await readFile(join(dir, "metrics.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as { loss?: number; peak_memory_gib?: number });
  const losses = lines.flatMap((l) => (l.loss === undefined ? [] : [l.loss]));
  assert.equal(losses.length, 20, `${name}: ${losses.length} logged losses`);
  return { losses, peak: lines.find((l) => l.peak_memory_gib !== undefined)?.peak_memory_gib, dir };
}

function compare(label: string, ref: number[], got: number[], tol: number): number {
  let worst = 0;
  ref.forEach((r, i) => {
    const rel = Math.abs(r - got[i]!) / Math.abs(r);
    worst = Math.max(worst, rel);
  });
  console.log(`${label}: worst relative loss difference over 20 steps ${worst.toExponential(2)}`);
  console.log(`  cpu: ${ref.map((x) => x.toFixed(4)).join(" ")}`);
  console.log(`  gpu: ${got.map((x) => x.toFixed(4)).join(" ")}`);
  assert.ok(worst <= tol, `${label}: loss curves differ by ${worst} (tolerance ${tol})`);
  assert.ok(got[got.length - 1]! < got[0]!, `${label}: the GPU run's loss did not decrease`);
  return worst;
}

let gpuAdapter = "";

void test("f32 LoRA: the GPU loss curve matches the CPU reference step by step (checkpointing on and off)", async () => {
  const cpu = await train("cpu", "cpu-f32", []);
  const gpu = await train(GPU, "gpu-f32", []);
  compare("f32 LoRA", cpu.losses, gpu.losses, 2e-3);
  if (GPU === "cuda") assert.ok(gpu.peak !== undefined && gpu.peak > 0, "the GPU run logs its peak memory");
  const gpuCkpt = await train(GPU, "gpu-f32-ckpt", ["--gradient_checkpointing", "true"]);
  compare("f32 LoRA, checkpointing", cpu.losses, gpuCkpt.losses, 2e-3);
  gpuAdapter = gpu.dir;
});

void test("bf16 LoRA and QLoRA (NF4, double quant) on the GPU track the CPU reference", async () => {
  const cpu = await train("cpu", "cpu-bf16", ["--bf16", "true"]);
  const gpu = await train(GPU, "gpu-bf16", ["--bf16", "true", "--gradient_checkpointing", "true"]);
  compare("bf16 LoRA", cpu.losses, gpu.losses, 3e-2);
  const q = ["--bf16", "true", "--use_4bit_quantization", "true", "--bnb_4bit_quant_type", "nf4", "--use_nested_quant", "true"];
  const cpuQ = await train("cpu", "cpu-qlora", q);
  const gpuQ = await train(GPU, "gpu-qlora", [...q, "--gradient_checkpointing", "true"]);
  compare("QLoRA", cpuQ.losses, gpuQ.losses, 3e-2);
});

void test("the GPU-trained adapter loads in PEFT with the same logits (python3 + peft on this machine)", async (t) => {
  const python = spawnSync("python3", ["-c", "import peft, transformers, torch"], { encoding: "utf8" });
  if (python.status !== 0) {
    t.skip("python3 with torch, transformers and peft is not available here");
    return;
  }
  assert.ok(gpuAdapter !== "", "the f32 GPU run must have produced an adapter");
  const backend = createCpuBackend();
  const opened = await openModelForUse(backend, MODEL, { adapterDir: gpuAdapter, baseDtype: "f32" });
  const model = createCausalLm(backend, opened.params, { checkpointing: false, seed: 0 });
  const V = opened.cfg.vocabSize;
  const ids = [V - 8, 5, 9, 14, V - 7, 20, 21, 22, V - 6, 30, 31];
  await forward(model, uploadBatch(model, batchFromDocuments([{ inputIds: ids }])));
  const logitsPath = join(tmp, "tuna-logits.json");
  await writeFile(logitsPath, JSON.stringify({ input_ids: ids, vocab_size: V, logits: Array.from(await lastLogits(model)) }));
  const check = spawnSync("python3", [join(root, "tools/peft-check/check_peft_load.py"), MODEL, gpuAdapter, logitsPath], { encoding: "utf8" });
  console.log(check.stdout, check.stderr);
  assert.equal(check.status, 0, `PEFT check failed:\n${check.stdout}\n${check.stderr}`);
});
