// `tuna train` on the GPU at a size where the GPU matters: a random 0.5B Llama written as bf16 safetensors,
// quantized to NF4 (double quant) at load, LoRA r=16 with dropout on all linear layers, chatml, packing to
// 1024 tokens, gradient checkpointing, checkpoints every 6 steps; then an exact-position resume and
// `tuna generate` on the GPU with the trained adapter.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { copyFile, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { main } from "../src/cli/main.ts";
import { memoryOutput } from "../src/cli/output.ts";
import { writeRandomModel } from "../src/hf/random-init.ts";
import { createRng } from "../src/util/random.ts";
import { packageRoot } from "../src/util/package-root.ts";

const root = packageRoot(import.meta.url);
const GPU = process.env.TUNA_PARITY_GPU ?? "cuda";
let tmp = "";
let model = "";
let data = "";

// TinyLlama's layout at 8 layers: GQA 32/4, head dim 64, untied embeddings, Mistral's 32k vocabulary.
const TINY = process.env.TUNA_E2E_TINY === "1"; // a dry run of the flow on a machine without a GPU
const CONFIG = {
  model_type: "llama",
  architectures: ["LlamaForCausalLM"],
  vocab_size: 32000,
  hidden_size: 2048,
  intermediate_size: 5632,
  num_hidden_layers: 8,
  num_attention_heads: 32,
  num_key_value_heads: 4,
  max_position_embeddings: 2048,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: false,
  bos_token_id: 1,
  eos_token_id: 2,
  ...(TINY ? { hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 } : {}),
};

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tuna-gpu-e2e-"));
  model = join(tmp, "model");
  const t0 = performance.now();
  await writeRandomModel(model, CONFIG, { seed: 1, dtype: "BF16", std: 0.02, hfInit: true });
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) await copyFile(join(root, "examples/tiny-llama", f), join(model, f));
  // Conversations with a learnable pattern: the answer repeats the question's words in reverse.
  const rng = createRng(3);
  const words = ["red", "green", "blue", "cat", "dog", "moon", "sun", "fast", "slow", "quiet", "loud", "river", "stone", "tree", "cloud"];
  const lines: string[] = [];
  for (let i = 0; i < 600; i++) {
    const n = 3 + Math.floor(rng.uniform() * 8);
    const ws = Array.from({ length: n }, () => words[Math.floor(rng.uniform() * words.length)]!);
    lines.push(JSON.stringify({ messages: [{ role: "user", content: `reverse the words: ${ws.join(" ")}` }, { role: "assistant", content: [...ws].reverse().join(" ") }] }));
  }
  data = join(tmp, "chat.jsonl");
  await writeFile(data, `${lines.join("\n")}\n`);
  console.log(`wrote a random ${CONFIG.num_hidden_layers}-layer ${CONFIG.hidden_size}-wide model and 600 conversations in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const flags = (out: string, extra: string[]): string[] => [
  "--model_name_or_path", model,
  "--dataset_name", data,
  "--splits", "train",
  "--chat_template_format", "chatml",
  "--assistant_only_loss", "true",
  "--use_4bit_quantization", "true", "--use_nested_quant", "true", "--bnb_4bit_quant_type", "nf4",
  "--bnb_4bit_compute_dtype", "bfloat16", "--bf16", "true",
  "--use_peft_lora", "--lora_r", "16", "--lora_alpha", "32", "--lora_dropout", "0.1",
  "--lora_target_modules", "all-linear",
  "--packing", "--max_seq_length", TINY ? "128" : "1024",
  "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2",
  "--gradient_checkpointing", "true",
  "--learning_rate", "1e-3", "--lr_scheduler_type", "cosine", "--warmup_ratio", "0.1",
  "--max_steps", "12", "--logging_steps", "1", "--save_steps", "6",
  "--seed", "5", "--device", GPU,
  "--output_dir", out,
  ...extra,
];

interface Metric {
  step: number;
  loss?: number;
  peak_memory_gib?: number;
  tokens_per_second?: number;
}

async function train(out: string, extra: string[] = []): Promise<{ metrics: Metric[]; stdout: string; seconds: number }> {
  const o = memoryOutput();
  const t0 = performance.now();
  const code = await main(["train", ...flags(out, extra)], o);
  const seconds = (performance.now() - t0) / 1000;
  assert.equal(code, 0, o.stderr.join("\n"));
  const metrics = (await readFile(join(out, "metrics.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as Metric);
  return { metrics, stdout: o.stdout.join("\n"), seconds };
}

let outDir = "";

void test("QLoRA end to end on the GPU: quantize at load, train with dropout + checkpointing + packing, checkpoints", async () => {
  outDir = join(tmp, "run");
  const { metrics, seconds } = await train(outDir);
  const losses = metrics.flatMap((m) => (m.loss === undefined ? [] : [m.loss]));
  assert.equal(losses.length, 12);
  console.log(`12 steps in ${seconds.toFixed(1)} s (load and data included); losses ${losses.map((l) => l.toFixed(3)).join(" ")}`);
  const peak = metrics.find((m) => m.peak_memory_gib !== undefined)?.peak_memory_gib;
  console.log(`peak GPU memory ${peak} GiB`);
  assert.ok(losses.every(Number.isFinite));
  const first = (losses[0]! + losses[1]!) / 2;
  const last = (losses[10]! + losses[11]!) / 2;
  assert.ok(last < first - (TINY ? 0.02 : 0.1), `the loss must fall: ${first} -> ${last}`);
  const entries = await readdir(outDir);
  for (const c of ["checkpoint-6", "checkpoint-12"]) assert.ok(entries.includes(c), `${c} in ${entries.join(", ")}`);
  const ckpt = await readdir(join(outDir, "checkpoint-6"));
  for (const f of ["adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors", "trainer_state.json"]) assert.ok(ckpt.includes(f), `${f} in checkpoint-6`);
  assert.ok(entries.includes("adapter_model.safetensors"), "the final adapter");
});

void test("resuming from checkpoint-6 continues at step 7 with the same losses (within GPU atomics' noise)", async () => {
  assert.ok(outDir !== "");
  const full = (await readFile(join(outDir, "metrics.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as Metric);
  const resumedDir = join(tmp, "resumed");
  const { metrics } = await train(resumedDir, ["--resume_from_checkpoint", join(outDir, "checkpoint-6")]);
  const tail = (ms: Metric[]): number[] => ms.filter((m) => m.step > 6 && m.loss !== undefined).map((m) => m.loss!);
  const a = tail(full);
  const b = tail(metrics);
  assert.equal(b.length, 6, `steps after 6: ${b.length}`);
  a.forEach((x, i) => {
    assert.ok(Math.abs(x - b[i]!) <= 2e-3 * Math.abs(x), `step ${7 + i}: ${x} vs resumed ${b[i]}`);
  });
});

void test("tuna generate on the GPU with the trained adapter", async () => {
  const o = memoryOutput();
  const code = await main(["generate", model, "--adapter", outDir, "--device", GPU, "--bf16", "--chat", "--max_new_tokens", "12", "--prompt", "reverse the words: red cat moon"], o);
  assert.equal(code, 0, o.stderr.join("\n"));
  console.log(`generate: ${o.stdout.join("\n")}`);
  assert.ok(o.stdout.join("").trim().length > 0);
});
