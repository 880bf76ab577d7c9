// `tuna dpo` end to end on the shipped tiny model and preference fixture: TRL's metric names in the logs
// (training and evaluation), a checkpoint that resumes exactly, 2 ranks that reproduce one process with the
// same global batch of pairs, precomputed reference log-probabilities equal to the per-step reference, full
// fine-tuning with its reference kept in the output folder, and the refusals that keep SFT and DPO apart.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openSafetensors } from "../../../src/io/safetensors/reader.ts";
import { decodeToFloat32 } from "../../../src/io/safetensors/convert.ts";
import { freePort } from "../../dist/free-port.ts";

const root = new URL("../../..", import.meta.url).pathname;
let tmp = "";
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tuna-dpo-"));
  const build = spawnSync(process.execPath, ["tools/build.mjs"], { cwd: root, encoding: "utf8" });
  assert.equal(build.status, 0, build.stderr);
  const rows = (await readFile(join(root, "test/fixtures/preference-small.jsonl"), "utf8")).trim().split("\n");
  const { mkdir } = await import("node:fs/promises");
  await mkdir(join(tmp, "data"));
  await writeFile(join(tmp, "data", "train.jsonl"), rows.slice(0, 18).join("\n") + "\n");
  await writeFile(join(tmp, "data", "test.jsonl"), rows.slice(18).join("\n") + "\n");
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** The run's flags; a flag in `extra` replaces the base one of that name (a flag may be given once). */
const flags = (out: string, extra: string[] = []): string[] => {
  const base = [
    "--model_name_or_path", join(root, "examples/tiny-llama"),
    "--dataset_name", join(tmp, "data"), "--splits", "train",
    "--chat_template_format", "chatml",
    "--use_peft_lora", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0",
    "--per_device_train_batch_size", "2", "--learning_rate", "5e-3", "--beta", "0.5",
    "--logging_steps", "1", "--max_steps", "4", "--save_strategy", "no", "--report_to", "jsonl",
    "--seed", "3", "--device", "cpu", "--output_dir", out,
  ];
  const replaced = new Set(extra.filter((f) => f.startsWith("--")));
  const kept: string[] = [];
  for (let i = 0; i < base.length; i++) {
    if (replaced.has(base[i]!)) {
      if (base[i + 1] !== undefined && !base[i + 1]!.startsWith("--")) i++;
      continue;
    }
    kept.push(base[i]!);
  }
  return [...kept, ...extra];
};

function tuna(args: string[]): { status: number | null; stderr: string; stdout: string } {
  return spawnSync(process.execPath, ["bin/tuna.js", ...args], { cwd: root, encoding: "utf8", timeout: 170_000 });
}

async function logs(out: string): Promise<Record<string, number>[]> {
  return (await readFile(join(out, "metrics.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as Record<string, number>);
}

async function adapter(out: string): Promise<Map<string, Float32Array>> {
  const file = await openSafetensors(join(out, "adapter_model.safetensors"));
  const m = new Map<string, Float32Array>();
  for (const [name, info] of file.tensors) m.set(name, decodeToFloat32(await file.readTensor(name), info.dtype));
  await file.close();
  return m;
}

function worstDifference(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  let worst = 0;
  for (const [name, values] of a) {
    const other = b.get(name)!;
    for (let i = 0; i < values.length; i++) worst = Math.max(worst, Math.abs(values[i]! - other[i]!));
  }
  return worst;
}

const relative = (a: number, b: number): number => Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);

void test("tuna dpo: TRL's metrics in the logs (training and evaluation), loss log 2 at the first step, an adapter saved", { timeout: 180_000 }, async () => {
  const out = join(tmp, "basic");
  // lora_dropout 0.1 is switched off by disable_dropout (TRL's DPOConfig default).
  const r = tuna(["dpo", ...flags(out, ["--splits", "train,test", "--eval_strategy", "steps", "--eval_steps", "2", "--per_device_eval_batch_size", "3", "--lora_dropout", "0.1"])]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /train: 18 rows -> 18 preference pairs/);
  const entries = await logs(out);
  const train = entries.filter((e) => "loss" in e);
  assert.equal(train.length, 4);
  for (const key of ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"]) {
    assert.ok(typeof train[0]![key] === "number", `${key} in ${JSON.stringify(train[0])}`);
  }
  // LoRA starts with B = 0: the policy is the reference, the sigmoid loss log 2.
  assert.ok(Math.abs(train[0]!.loss! - Math.log(2)) < 1e-9, String(train[0]!.loss));
  assert.equal(train[0]!["rewards/margins"], 0);
  const evals = entries.filter((e) => "eval_loss" in e);
  assert.equal(evals.length, 2);
  assert.ok(typeof evals[0]!["eval_rewards/margins"] === "number" && !("eval_perplexity" in evals[0]!), JSON.stringify(evals[0]));
  assert.ok((await stat(join(out, "adapter_model.safetensors"))).size > 0);
  const config = JSON.parse(await readFile(join(out, "adapter_config.json"), "utf8")) as { peft_type: string; lora_dropout: number };
  assert.equal(config.peft_type, "LORA");
  assert.equal(config.lora_dropout, 0);
  const card = await readFile(join(out, "README.md"), "utf8");
  assert.match(card, /^tags:\n- tuna\n- dpo\n- lora$/m);
  assert.match(card, /^- dpo: beta=0\.5, loss_type=sigmoid$/m);
});

void test("tuna dpo resumes from a checkpoint exactly (the reference is recomputed with the adapters off)", { timeout: 240_000 }, async () => {
  const straight = join(tmp, "straight");
  const s0 = tuna(["dpo", ...flags(straight, ["--max_steps", "6"])]);
  assert.equal(s0.status, 0, s0.stderr);
  const out = join(tmp, "resumed");
  const saves = ["--save_strategy", "steps", "--save_steps", "3"];
  // The same schedule (max_steps 6) in both runs; the second starts again from step 3's checkpoint.
  const first = tuna(["dpo", ...flags(out, ["--max_steps", "6", ...saves])]);
  assert.equal(first.status, 0, first.stderr);
  const r = tuna(["dpo", ...flags(out, ["--max_steps", "6", ...saves, "--resume_from_checkpoint", join(out, "checkpoint-3")])]);
  assert.equal(r.status, 0, r.stderr);
  const a = (await logs(straight)).filter((e) => "loss" in e);
  const b = (await logs(out)).filter((e) => "loss" in e);
  assert.equal(b.at(-1)!.step, 6);
  assert.ok(relative(b.at(-1)!.loss!, a.at(-1)!.loss!) < 1e-6, `${b.at(-1)!.loss} vs ${a.at(-1)!.loss}`);
  assert.ok(worstDifference(await adapter(out), await adapter(straight)) < 1e-6);
});

void test("2 ranks x 1 pair reproduce one process with 2 pairs a step (the loss is a mean over all ranks' pairs); precomputed reference log-probabilities change nothing", { timeout: 240_000 }, async () => {
  const single = join(tmp, "single");
  assert.equal(tuna(["dpo", ...flags(single)]).status, 0);
  const config = join(tmp, "two.yaml");
  await writeFile(config, `compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_processes: 2\nmain_process_port: ${await freePort()}\n`);
  const multi = join(tmp, "multi");
  const r = tuna(["dpo", "--config_file", config, ...flags(multi, ["--per_device_train_batch_size", "1"])]);
  assert.equal(r.status, 0, r.stderr);
  const a = (await logs(single)).filter((e) => "loss" in e);
  const b = (await logs(multi)).filter((e) => "loss" in e);
  a.forEach((e, i) => {
    assert.ok(relative(b[i]!.loss!, e.loss!) < 1e-6, `step ${e.step}: ${b[i]!.loss} vs ${e.loss}`);
    assert.ok(Math.abs(b[i]!["rewards/margins"]! - e["rewards/margins"]!) < 1e-6);
  });
  const worst = worstDifference(await adapter(multi), await adapter(single));
  // Float sums in another order only (every logged loss agrees within 1e-6); Adam's g / sqrt(v) turns those into
  // ~1e-6 on the weights at this learning rate (5e-3).
  assert.ok(worst < 1e-5, `adapters differ by ${worst}`);
  const pre = join(tmp, "precomputed");
  const p = tuna(["dpo", ...flags(pre, ["--precompute_ref_log_probs"])]);
  assert.equal(p.status, 0, p.stderr);
  assert.match(p.stderr, /reference log-probabilities of 18 pairs computed/);
  (await logs(pre)).filter((e) => "loss" in e).forEach((e, i) => {
    assert.ok(relative(e.loss!, a[i]!.loss!) < 1e-6, `step ${e.step}: ${e.loss} vs ${a[i]!.loss}`);
  });
});

void test("full fine-tuning DPO: the starting weights' reference log-probabilities, kept in the output folder", { timeout: 180_000 }, async () => {
  const out = join(tmp, "full");
  const args = flags(out, ["--max_steps", "2", "--learning_rate", "1e-4"]).filter((f) => !["--use_peft_lora", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"].includes(f));
  const r = tuna(["dpo", ...args]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /full fine-tuning DPO: the reference log-probabilities are those of the starting weights/);
  const saved = JSON.parse(await readFile(join(out, "dpo_reference_logps.json"), "utf8")) as { pairs: Record<string, [number, number]> };
  assert.equal(Object.keys(saved.pairs).length, 18);
  assert.ok(Math.abs((await logs(out))[0]!.loss! - Math.log(2)) < 1e-9, "policy = reference at the first step");
});

void test("tuna train refuses DPO settings; tuna dpo refuses packing, loss lists that do not fit their weights, and unknown loss types, naming them", () => {
  const train = tuna(["train", ...flags(join(tmp, "x1"), ["--beta", "0.2"])]);
  assert.notEqual(train.status, 0);
  assert.match(train.stderr, /--beta is a setting of preference training: run tuna dpo/);
  const packing = tuna(["dpo", ...flags(join(tmp, "x2"), ["--packing"])]);
  assert.notEqual(packing.status, 0);
  assert.match(packing.stderr, /tuna dpo does not pack pairs together/);
  // TRL 1.13's loss lists: weights one per loss, sft once (it is rpo_alpha's term), exo_pair with its epsilon.
  const weights = tuna(["dpo", ...flags(join(tmp, "x3"), ["--loss_type", "sigmoid,sft", "--loss_weights", "1"])]);
  assert.notEqual(weights.status, 0);
  assert.match(weights.stderr, /loss_weights has 1 value\(s\) for 2 loss type\(s\) \(sigmoid,sft\)/);
  const twice = tuna(["dpo", ...flags(join(tmp, "x5"), ["--loss_type", "sft", "--rpo_alpha", "0.5"])]);
  assert.match(twice.stderr, /loss_type sft and rpo_alpha are the same term/);
  const exo = tuna(["dpo", ...flags(join(tmp, "x6"), ["--loss_type", "exo_pair"])]);
  assert.match(exo.stderr, /loss_type exo_pair needs label_smoothing > 0/);
  const unknown = tuna(["dpo", ...flags(join(tmp, "x7"), ["--loss_type", "sigmoid,kto"])]);
  assert.notEqual(unknown.status, 0);
  assert.match(unknown.stderr, /loss_type = sigmoid,kto/);
  const smoothing = tuna(["dpo", ...flags(join(tmp, "x4"), ["--loss_type", "hinge", "--label_smoothing", "0.1"])]);
  assert.notEqual(smoothing.status, 0);
  assert.match(smoothing.stderr, /label_smoothing 0\.1 applies to the sigmoid, robust, exo_pair, aot and aot_pair losses/);
});
