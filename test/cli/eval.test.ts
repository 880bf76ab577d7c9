import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openWeightsFile } from "../../src/io/safetensors/checkpoint.ts";
import { GOLDEN, readDump, readInts } from "../model/causal-lm/golden-harness.ts";
import { runCli, type CliRun } from "./run-cli.ts";

let root = "";
let dataset = "";
let expectedLoss = 0;
let expectedBaseLoss = 0;

/** HF's loss from dumped logits: mean CE over shifted labels != -100, computed here in f64. */
function lossFromLogits(logits: Float32Array, labels: number[], B: number, T: number, V: number): number {
  let sum = 0;
  let n = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t + 1 < T; t++) {
      const target = labels[b * T + t + 1]!;
      if (target === -100) continue;
      const row = logits.subarray((b * T + t) * V, (b * T + t + 1) * V);
      let max = -Infinity;
      for (const v of row) max = Math.max(max, v);
      let z = 0;
      for (const v of row) z += Math.exp(v - max);
      sum += Math.log(z) + max - row[target]!;
      n++;
    }
  }
  return sum / n;
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), "tuna-eval-"));
  const dump = await openWeightsFile(join(GOLDEN, "llama", "a.safetensors"));
  const ids = await readInts(dump, "input_ids");
  const labels = await readInts(dump, "labels");
  const mask = await readInts(dump, "attention_mask");
  const [B, T] = ids.shape as [number, number];
  const lines = [];
  for (let b = 0; b < B; b++) {
    const slice = (a: number[]): number[] => a.slice(b * T, (b + 1) * T);
    lines.push(JSON.stringify({ input_ids: slice(ids.values), labels: slice(labels.values), attention_mask: slice(mask.values) }));
  }
  dataset = join(root, "eval.jsonl");
  await writeFile(dataset, lines.join("\n") + "\n");
  expectedLoss = (await readDump(dump, "loss"))[0]!;
  expectedBaseLoss = lossFromLogits(await readDump(dump, "logits_base"), labels.values, B, T, 256);
  await dump.close();
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

const run = (...args: string[]): Promise<CliRun> => runCli(args);

test("eval with the PEFT adapter reproduces transformers' loss on the golden batch", async () => {
  const r = await run("eval", join(GOLDEN, "llama/model"), "--adapter", join(GOLDEN, "llama/adapter"), "--dataset_name", dataset, "--json");
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out) as { eval_loss: number; perplexity: number; tokens: number };
  assert.ok(Math.abs(j.eval_loss - expectedLoss) / expectedLoss < 1e-5, `${j.eval_loss} vs ${expectedLoss}`);
  assert.ok(Math.abs(j.perplexity - Math.exp(expectedLoss)) / Math.exp(expectedLoss) < 1e-4);
});

test("eval of the base model alone, one row per batch: the loss is still the mean over all tokens", async () => {
  const r = await run("eval", join(GOLDEN, "llama/model"), "--dataset-name", dataset, "--per-device-eval-batch-size", "1", "--json");
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out) as { eval_loss: number };
  assert.ok(Math.abs(j.eval_loss - expectedBaseLoss) / expectedBaseLoss < 1e-5, `${j.eval_loss} vs ${expectedBaseLoss}`);
});

test("eval bad input: malformed line with its number, missing dataset, ids outside the vocabulary", async () => {
  const bad = join(root, "bad.jsonl");
  await writeFile(bad, '{"input_ids": [3, 4, 5]}\n{"input_ids": [3, 4\n');
  let r = await run("eval", join(GOLDEN, "llama/model"), "--dataset_name", bad);
  assert.equal(r.code, 1);
  assert.match(r.err, /bad\.jsonl:2: not valid JSON/);
  r = await run("eval", join(GOLDEN, "llama/model"), "--dataset_name", join(root, "none.jsonl"));
  assert.equal(r.code, 1);
  assert.match(r.err, /FILE_NOT_FOUND/);
  await writeFile(bad, '{"input_ids": [3, 4, 999]}\n');
  r = await run("eval", join(GOLDEN, "llama/model"), "--dataset_name", bad);
  assert.equal(r.code, 1);
  assert.match(r.err, /token id 999 .* outside the model's vocabulary \(256\)/);
  r = await run("eval", join(GOLDEN, "llama/model"));
  assert.equal(r.code, 1);
  assert.match(r.err, /--dataset_name is required/);
});

test("eval with a 4-bit NF4 base stays close to the full-precision loss", async () => {
  const r = await run("eval", join(GOLDEN, "llama/model"), "--adapter", join(GOLDEN, "llama/adapter"), "--dataset_name", dataset, "--use_4bit_quantization", "--use_nested_quant", "--json");
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out) as { eval_loss: number };
  assert.notEqual(j.eval_loss, expectedLoss);
  assert.ok(Math.abs(j.eval_loss - expectedLoss) / expectedLoss < 0.05, `${j.eval_loss} vs ${expectedLoss}`);
});

test("eval turns LoRA dropout off: an adapter with lora_dropout 0.5 gives the same loss twice", async () => {
  const adapter = join(root, "dropout-adapter");
  await cp(join(GOLDEN, "llama/adapter"), adapter, { recursive: true });
  const configPath = join(adapter, "adapter_config.json");
  const config = JSON.parse(await readFile(configPath, "utf8")) as Record<string, unknown>;
  await writeFile(configPath, JSON.stringify({ ...config, lora_dropout: 0.5 }));
  const a = await run("eval", join(GOLDEN, "llama/model"), "--adapter", adapter, "--dataset_name", dataset, "--json");
  assert.equal(a.code, 0, a.err);
  const j = JSON.parse(a.out) as { eval_loss: number };
  assert.ok(Math.abs(j.eval_loss - expectedLoss) / expectedLoss < 1e-5, `${j.eval_loss} vs ${expectedLoss}`);
});

test("eval on a dataset as tuna train reads it (chat, assistant-only loss) = eval of its tuna data --export; one line per split", async () => {
  const demo = join(import.meta.dirname, "../../examples/demo");
  const common = ["--dataset_name", join(demo, "data"), "--assistant_only_loss", "--per_device_eval_batch_size", "50", "--device", "cpu"];
  const direct = await run("eval", join(demo, "base-model"), ...common, "--splits", "test", "--json");
  assert.equal(direct.code, 0, direct.err);
  const splits = (JSON.parse(direct.out) as { splits: { split: string; loss: number; tokens: number; examples: number }[] }).splits;
  assert.deepEqual(splits.map((s) => [s.split, s.examples]), [["test", 100]]);
  const exported = join(root, "export");
  const data = await run("data", "--model_name_or_path", join(demo, "base-model"), "--dataset_name", join(demo, "data"), "--splits", "train,test", "--assistant_only_loss", "--no_cache", "--output_dir", join(root, "data-out"), "--export", exported);
  assert.equal(data.code, 0, data.err);
  const pre = await run("eval", join(demo, "base-model"), "--dataset_name", join(exported, "test.jsonl"), "--per_device_eval_batch_size", "50", "--device", "cpu", "--json");
  assert.equal(pre.code, 0, pre.err);
  const preResult = JSON.parse(pre.out) as { eval_loss: number; tokens: number };
  assert.equal(preResult.tokens, splits[0]!.tokens);
  assert.ok(Math.abs(preResult.eval_loss - splits[0]!.loss) < 1e-9, `${preResult.eval_loss} vs ${splits[0]!.loss}`);
  const flagsFirst = await run("eval", ...common, join(demo, "base-model"));
  assert.equal(flagsFirst.code, 1);
  assert.match(flagsFirst.err, /put the model first: tuna eval <model> --dataset_name/);
  const both = await run("eval", join(demo, "base-model"), ...common);
  assert.match(both.out, /^train: eval_loss [\d.]+ +perplexity [\d.]+ +\(\d+ trained tokens in 1000 rows\)$/m);
  assert.match(both.out, /^test: eval_loss /m);
});

test("eval --metric: the demo base model copies words (exact match 100%) and cannot reverse them (0%)", async () => {
  const demo = join(import.meta.dirname, "../../examples/demo");
  const rows = (await readFile(join(demo, "data", "test.jsonl"), "utf8")).trim().split("\n").slice(0, 20);
  const copy = join(root, "copy");
  const { mkdir } = await import("node:fs/promises");
  await mkdir(copy, { recursive: true });
  await writeFile(
    join(copy, "test.jsonl"),
    rows.map((l) => {
      const word = (JSON.parse(l) as { messages: { content: string }[] }).messages[0]!.content.replace("reverse: ", "");
      return JSON.stringify({ messages: [{ role: "user", content: `copy: ${word}` }, { role: "assistant", content: word }] });
    }).join("\n") + "\n",
  );
  await writeFile(join(copy, "reverse-test.jsonl"), rows.join("\n") + "\n");
  const copied = await run("eval", join(demo, "base-model"), "--dataset_name", join(copy, "test.jsonl"), "--splits", "train", "--device", "cpu", "--metric", "exact_match", "--max_new_tokens", "16");
  assert.equal(copied.code, 0, copied.err);
  assert.match(copied.out, /exact_match 100\.0% \(20 examples\)/);
  const reversed = await run("eval", join(demo, "base-model"), "--dataset_name", join(copy, "reverse-test.jsonl"), "--splits", "train", "--device", "cpu", "--metric", "exact_match", "--max_new_tokens", "16");
  assert.equal(reversed.code, 0, reversed.err);
  assert.match(reversed.out, /exact_match 0\.0% \(20 examples\)/);
  const bad = await run("eval", join(demo, "base-model"), "--dataset_name", join(copy, "test.jsonl"), "--splits", "train", "--metric", "bleu");
  assert.equal(bad.code, 1);
  assert.match(bad.err, /--metric must be exact_match or contains/);
});
