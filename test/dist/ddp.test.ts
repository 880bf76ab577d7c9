// Data-parallel training through `tuna launch` with real processes on the host transport: 2 and 3 ranks
// reproduce the one-process run with the same global batch (per-device batch x accumulation x ranks),
// with packing and gradient accumulation: the logged losses and gradient norms and the final adapter agree
// within 1e-6 relative (only the order of float sums differs).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { freePort } from "./free-port.ts";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openSafetensors } from "../../src/io/safetensors/reader.ts";
import { decodeToFloat32 } from "../../src/io/safetensors/convert.ts";

const root = new URL("../..", import.meta.url).pathname;
let tmp = "";

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tuna-ddp-"));
  const build = spawnSync(process.execPath, ["tools/build.mjs"], { cwd: root, encoding: "utf8" });
  assert.equal(build.status, 0, build.stderr);
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const flags = (out: string, ga: number): string[] => [
  "--model_name_or_path", join(root, "examples/tiny-llama"),
  "--dataset_name", join(root, "test/fixtures/chat-small.jsonl"),
  "--splits", "train",
  "--chat_template_format", "chatml", "--assistant_only_loss",
  "--use_peft_lora", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0",
  "--packing", "--max_seq_length", "48",
  "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", String(ga),
  "--learning_rate", "2e-3", "--logging_steps", "1", "--max_steps", "5",
  "--save_strategy", "no", "--report_to", "none", "--seed", "5", "--device", "cpu",
  "--output_dir", out,
];

interface Run {
  metrics: { step: number; loss: number; grad_norm: number }[];
  adapter: Map<string, Float32Array>;
}

async function readRun(out: string): Promise<Run> {
  const metrics = (await readFile(join(out, "metrics.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as Run["metrics"][number]).filter((m) => "loss" in m);
  const file = await openSafetensors(join(out, "adapter_model.safetensors"));
  const adapter = new Map<string, Float32Array>();
  for (const [name, info] of file.tensors) adapter.set(name, decodeToFloat32(await file.readTensor(name), info.dtype));
  await file.close();
  return { metrics, adapter };
}

function relative(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);
}

for (const [world, ga, bucketMb] of [[2, 1, undefined], [3, 2, 0.001]] as const) {
  const buckets = bucketMb === undefined ? "" : `, gradients in ${bucketMb} MiB buckets reduced as layers finish`;
  void test(`${world} ranks x GA ${ga} reproduce one process with GA ${world * ga} (losses, grad norms, adapter within 1e-6)${buckets}`, { timeout: 180_000 }, async () => {
    const single = join(tmp, `single-${world}`);
    const one = spawnSync(process.execPath, ["bin/tuna.js", "train", ...flags(single, world * ga)], { cwd: root, encoding: "utf8", timeout: 170_000 });
    assert.equal(one.status, 0, one.stderr);
    const multi = join(tmp, `multi-${world}`);
    const port = await freePort();
    const bucketFlags = bucketMb === undefined ? [] : ["--ddp_bucket_cap_mb", String(bucketMb)];
    const many = spawnSync(process.execPath, ["bin/tuna.js", "launch", "--nproc_per_node", String(world), "--master_port", String(port), "tuna", "train", ...flags(multi, ga), ...bucketFlags], {
      cwd: root,
      encoding: "utf8",
      timeout: 170_000,
    });
    assert.equal(many.status, 0, many.stderr);
    const a = await readRun(single);
    const b = await readRun(multi);
    assert.equal(b.metrics.length, 5);
    // One log, rank 0's: the job's peak memory is the largest of the ranks', each logged too.
    const logged = JSON.parse((await readFile(join(multi, "metrics.jsonl"), "utf8")).split("\n")[0]!) as Record<string, number>;
    const perRank = Array.from({ length: world }, (_, r) => logged[`peak_memory_gib_rank_${r}`]!);
    assert.ok(perRank.every((p) => p > 0.01 && p < 8), JSON.stringify(logged));
    assert.equal(logged.peak_memory_gib, Math.max(...perRank));
    b.metrics.forEach((m, i) => {
      const s = a.metrics[i]!;
      assert.equal(m.step, s.step);
      assert.ok(relative(m.loss, s.loss) < 1e-6, `step ${m.step}: loss ${m.loss} vs ${s.loss}`);
      assert.ok(relative(m.grad_norm, s.grad_norm) < 1e-6, `step ${m.step}: grad norm ${m.grad_norm} vs ${s.grad_norm}`);
    });
    assert.deepEqual([...b.adapter.keys()], [...a.adapter.keys()]);
    let num = 0;
    let den = 0;
    for (const [name, values] of b.adapter) {
      const ref = a.adapter.get(name)!;
      for (let i = 0; i < ref.length; i++) {
        num += (values[i]! - ref[i]!) ** 2;
        den += ref[i]! ** 2;
      }
    }
    assert.ok(Math.sqrt(num / den) < 1e-6, `adapter relative difference ${Math.sqrt(num / den)}`);
    // Rank 0 alone reports: one "done" line.
    assert.equal((many.stdout.match(/^done: /gm) ?? []).length, 1, many.stdout);
  });
}

void test("a checkpoint written by 2 ranks resumes on 1 process (and 1 on 2) exactly as the uninterrupted run", { timeout: 240_000 }, async () => {
  const run = (args: string[]): void => {
    const r = spawnSync(process.execPath, ["bin/tuna.js", ...args], { cwd: root, encoding: "utf8", timeout: 170_000 });
    assert.equal(r.status, 0, r.stderr);
  };
  const withSaves = (out: string, ga: number, extra: string[] = []): string[] => [...flags(out, ga), "--save_strategy", "steps", "--save_steps", "2", ...extra];
  // The reference: one process, global batch 2, five steps.
  const straight = join(tmp, "straight");
  run(["train", ...withSaves(straight, 2)]);
  // 2 ranks write checkpoint-2 (the rest of that run stands for what a crash loses), 1 process resumes it.
  const twoToOne = join(tmp, "two-to-one");
  run(["launch", "--nproc_per_node", "2", "--master_port", String(await freePort()), "tuna", "train", ...withSaves(twoToOne, 1)]);
  run(["train", ...withSaves(twoToOne, 2, ["--resume_from_checkpoint", join(twoToOne, "checkpoint-2")])]);
  // 1 process writes checkpoint-2, 2 ranks resume it.
  const oneToTwo = join(tmp, "one-to-two");
  run(["train", ...withSaves(oneToTwo, 2)]);
  run(["launch", "--nproc_per_node", "2", "--master_port", String(await freePort()), "tuna", "train", ...withSaves(oneToTwo, 1, ["--resume_from_checkpoint", join(oneToTwo, "checkpoint-2")])]);
  const reference = await readRun(straight);
  for (const out of [twoToOne, oneToTwo]) {
    const resumed = await readRun(out);
    const last = resumed.metrics.at(-1)!;
    const expected = reference.metrics.at(-1)!;
    assert.equal(last.step, 5, out);
    assert.ok(relative(last.loss, expected.loss) < 1e-6, `${out}: step 5 loss ${last.loss} vs ${expected.loss}`);
    for (const [name, values] of resumed.adapter) {
      const ref = reference.adapter.get(name)!;
      let worst = 0;
      for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(values[i]! - ref[i]!));
      assert.ok(worst < 1e-6, `${out}: ${name} differs by ${worst}`);
    }
  }
});

void test("a rank killed with SIGKILL mid-training: the launcher stops the others and exits non-zero within the bound", { timeout: 120_000 }, async () => {
  const { spawn, execFileSync } = await import("node:child_process");
  const out = join(tmp, "killed");
  const launcher = spawn(process.execPath, ["bin/tuna.js", "launch", "--nproc_per_node", "3", "--master_port", String(await freePort()), "tuna", "train", ...flags(out, 1), "--max_steps", "400", "--ddp_timeout", "20"], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let err = "";
  let killedAt = 0;
  launcher.stderr.on("data", (d: Buffer) => {
    err += d.toString();
    if (killedAt === 0 && /step 3\/400/.test(err)) {
      // The launcher's children, in rank order: kill rank 2.
      const children = execFileSync("pgrep", ["-P", String(launcher.pid)], { encoding: "utf8" }).trim().split("\n").map(Number).sort((x, y) => x - y);
      process.kill(children[2]!, "SIGKILL");
      killedAt = performance.now();
    }
  });
  const code = await new Promise<number | null>((resolve) => launcher.on("exit", (c) => { resolve(c); }));
  assert.ok(killedAt > 0, `no rank was killed:\n${err}`);
  assert.notEqual(code, 0);
  assert.ok(performance.now() - killedAt < 60_000, "the job ended within the bound");
  assert.match(err, /rank 2 exited with status 137|rank 2 on .*closed the connection/);
  // No final adapter or results for a failed job.
  assert.equal(spawnSync("test", ["-e", join(out, "train_results.json")]).status, 1);
});

void test("tuna train --config_file <accelerate yaml with num_processes 2> starts the ranks itself: the seed's DeepSpeed ZeRO-3 file and MULTI_GPU", { timeout: 240_000 }, async () => {
  const { readFile: read, writeFile } = await import("node:fs/promises");
  const seedYaml = await read(join(root, "test/config/fixtures/deepspeed_config_z3_qlora.yaml"), "utf8");
  const single = join(tmp, "accelerate-single");
  const one = spawnSync(process.execPath, ["bin/tuna.js", "train", ...flags(single, 2)], { cwd: root, encoding: "utf8", timeout: 170_000 });
  assert.equal(one.status, 0, one.stderr);
  const reference = await readRun(single);
  const files: [string, string][] = [
    ["deepspeed-z3.yaml", `${seedYaml}main_process_port: ${await freePort()}\n`],
    ["multi-gpu.yaml", `compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_processes: 2\nmain_process_port: ${await freePort()}\n`],
  ];
  for (const [name, text] of files) {
    const config = join(tmp, name);
    await writeFile(config, text);
    const out = join(tmp, `accelerate-${name}`);
    // The seed's file asks for bf16; this comparison runs f32 on the CPU (--bf16 false overrides it).
    const r = spawnSync(process.execPath, ["bin/tuna.js", "train", "--config_file", config, ...flags(out, 1), "--bf16", "false"], { cwd: root, encoding: "utf8", timeout: 170_000 });
    assert.equal(r.status, 0, `${name}: ${r.stderr}`);
    assert.match(r.stderr, /asks for 2 processes; starting 2 here/);
    if (name.startsWith("deepspeed")) {
      assert.match(r.stderr, /note: .*ZeRO stage 3.*each rank keeps 1\/2 of the frozen \(4-bit\) base layers and gathers each layer when it computes/);
      assert.match(r.stderr, /ZeRO-3: this rank keeps [\d.]+ KiB of the [\d.]+ KiB of frozen layer weights/);
    }
    const run = await readRun(out);
    assert.ok(relative(run.metrics.at(-1)!.loss, reference.metrics.at(-1)!.loss) < 1e-6, `${name}: ${run.metrics.at(-1)!.loss} vs ${reference.metrics.at(-1)!.loss}`);
  }
});

for (const [stage, world] of [[1, 2], [2, 3]] as const) {
  void test(`DeepSpeed ZeRO-${stage} on ${world} ranks: optimizer state${stage === 2 ? " and gradients" : ""} sharded, the same run as one process; its checkpoint resumes on one process`, { timeout: 240_000 }, async () => {
    const { writeFile } = await import("node:fs/promises");
    const config = join(tmp, `zero${stage}.yaml`);
    await writeFile(config, `compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: ${stage}\nnum_processes: ${world}\nmain_process_port: ${await freePort()}\n`);
    const single = join(tmp, `zero${stage}-single`);
    const one = spawnSync(process.execPath, ["bin/tuna.js", "train", ...flags(single, world), "--save_strategy", "steps", "--save_steps", "2"], { cwd: root, encoding: "utf8", timeout: 170_000 });
    assert.equal(one.status, 0, one.stderr);
    const out = join(tmp, `zero${stage}`);
    const r = spawnSync(process.execPath, ["bin/tuna.js", "train", "--config_file", config, ...flags(out, 1), "--save_strategy", "steps", "--save_steps", "2"], { cwd: root, encoding: "utf8", timeout: 170_000 });
    assert.equal(r.status, 0, r.stderr);
    const a = await readRun(single);
    const b = await readRun(out);
    b.metrics.forEach((m, i) => {
      assert.ok(relative(m.loss, a.metrics[i]!.loss) < 1e-6, `step ${m.step}: loss ${m.loss} vs ${a.metrics[i]!.loss}`);
      assert.ok(relative(m.grad_norm, a.metrics[i]!.grad_norm) < 1e-6, `step ${m.step}: grad norm ${m.grad_norm} vs ${a.metrics[i]!.grad_norm}`);
    });
    // Each rank wrote its own moments (optimizer-shard-R-of-W, its range in the metadata) and rank 0 the
    // manifest; laid end to end they equal one process's moments.
    const manifest = JSON.parse(await readFile(join(out, "checkpoint-4", "optimizer_shards.json"), "utf8")) as { world_size: number; zero_stage: number; shards: string[] };
    assert.deepEqual([manifest.world_size, manifest.zero_stage, manifest.shards.length], [world, stage, world]);
    const moments = async (dir: string): Promise<Float32Array[]> => {
      const file = await openSafetensors(join(dir, "checkpoint-4", "optimizer.safetensors"));
      if (file.tensors.has("exp_avg")) {
        const whole = [decodeToFloat32(await file.readTensor("exp_avg"), "F32"), decodeToFloat32(await file.readTensor("exp_avg_sq"), "F32")];
        await file.close();
        return whole;
      }
      const total = file.tensors.get("params")!.shape[0]!;
      await file.close();
      const m = new Float32Array(total);
      const v = new Float32Array(total);
      for (const [r, name] of manifest.shards.entries()) {
        assert.equal(name, `optimizer-shard-${r}-of-${world}.safetensors`);
        const shard = await openSafetensors(join(dir, "checkpoint-4", name));
        const lo = Number(shard.metadata!.lo);
        m.set(decodeToFloat32(await shard.readTensor("exp_avg"), "F32"), lo);
        v.set(decodeToFloat32(await shard.readTensor("exp_avg_sq"), "F32"), lo);
        await shard.close();
      }
      return [m, v];
    };
    const [ma, va] = await moments(single);
    const [mb, vb] = await moments(out);
    for (const [x, y, what] of [[mb!, ma!, "exp_avg"], [vb!, va!, "exp_avg_sq"]] as const) {
      let num = 0;
      let den = 0;
      for (let i = 0; i < y.length; i++) {
        num += (x[i]! - y[i]!) ** 2;
        den += y[i]! ** 2;
      }
      assert.equal(x.length, y.length);
      assert.ok(Math.sqrt(num / den) < 1e-5, `${what} relative difference ${Math.sqrt(num / den)}`);
    }
    // Resume the sharded run's checkpoint-2 on one process: the same step 5.
    const resumed = spawnSync(process.execPath, ["bin/tuna.js", "train", ...flags(out, world), "--save_strategy", "steps", "--save_steps", "2", "--resume_from_checkpoint", join(out, "checkpoint-2")], { cwd: root, encoding: "utf8", timeout: 170_000 });
    assert.equal(resumed.status, 0, resumed.stderr);
    const c = await readRun(out);
    assert.ok(relative(c.metrics.at(-1)!.loss, a.metrics.at(-1)!.loss) < 1e-6, `resumed step 5 loss ${c.metrics.at(-1)!.loss} vs ${a.metrics.at(-1)!.loss}`);
  });
}

void test("3 -> 2: a ZeRO-2 checkpoint of 3 ranks (its moments in 3 shard files) resumes on 2 ranks under ZeRO-1 exactly as the uninterrupted run", { timeout: 240_000 }, async () => {
  const { writeFile } = await import("node:fs/promises");
  const zero = async (stage: number, world: number): Promise<string> => {
    const config = join(tmp, `three-two-zero${stage}-${world}.yaml`);
    await writeFile(config, `compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: ${stage}\nnum_processes: ${world}\nmain_process_port: ${await freePort()}\n`);
    return config;
  };
  const run = (args: string[]): void => {
    const r = spawnSync(process.execPath, ["bin/tuna.js", "train", ...args, "--save_strategy", "steps", "--save_steps", "2"], { cwd: root, encoding: "utf8", timeout: 170_000 });
    assert.equal(r.status, 0, r.stderr);
  };
  // Global batch 6 throughout: one process GA 6; 3 ranks GA 2; 2 ranks GA 3.
  const straight = join(tmp, "three-two-straight");
  run(flags(straight, 6));
  const out = join(tmp, "three-two");
  run(["--config_file", await zero(2, 3), ...flags(out, 2)]);
  run(["--config_file", await zero(1, 2), ...flags(out, 3), "--resume_from_checkpoint", join(out, "checkpoint-2")]);
  const reference = await readRun(straight);
  const resumed = await readRun(out);
  assert.equal(resumed.metrics.at(-1)!.step, 5);
  for (const step of [3, 4, 5]) {
    const a = reference.metrics.find((m) => m.step === step)!;
    const b = resumed.metrics.filter((m) => m.step === step).at(-1)!;
    assert.ok(relative(b.loss, a.loss) < 1e-6, `step ${step}: loss ${b.loss} vs ${a.loss}`);
  }
  for (const [name, values] of resumed.adapter) {
    const ref = reference.adapter.get(name)!;
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(values[i]! - ref[i]!));
    assert.ok(worst < 1e-6, `${name} differs by ${worst}`);
  }
  // The 2-rank saves after the resume are 2-shard checkpoints.
  const manifest = JSON.parse(await readFile(join(out, "checkpoint-4", "optimizer_shards.json"), "utf8")) as { world_size: number };
  assert.equal(manifest.world_size, 2);
});

void test("Ctrl-C on a job of 2 ranks (ZeRO-1): the ranks finish the same step, save one complete checkpoint together, exit 130; it resumes", { timeout: 240_000 }, async () => {
  const { spawn } = await import("node:child_process");
  const { writeFile, readdir } = await import("node:fs/promises");
  const config = join(tmp, "ctrl-c-zero1.yaml");
  await writeFile(config, `compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 1\nnum_processes: 2\nmain_process_port: ${await freePort()}\n`);
  const out = join(tmp, "ctrl-c");
  // Its own process group, as a terminal gives a job: Ctrl-C is SIGINT to every process of the group.
  const job = spawn(process.execPath, ["bin/tuna.js", "train", "--config_file", config, ...flags(out, 1), "--max_steps", "400"], { cwd: root, stdio: ["ignore", "pipe", "pipe"], detached: true });
  let err = "";
  let sent = false;
  job.stderr.on("data", (d: Buffer) => {
    err += d.toString();
    if (!sent && /step 3\/400/.test(err)) {
      sent = true;
      process.kill(-job.pid!, "SIGINT");
    }
  });
  const code = await new Promise<number | null>((resolve) => job.on("exit", (c) => { resolve(c); }));
  assert.ok(sent, err);
  assert.equal(code, 130, err);
  const saved = /interrupted \(SIGINT\) after step (\d+); saved (\S+checkpoint-\d+)\./.exec(err);
  assert.ok(saved !== null, err);
  const entries = (await readdir(out)).filter((n) => n.includes("checkpoint"));
  assert.deepEqual(entries, [`checkpoint-${saved[1]!}`], "one complete checkpoint, no temporary folder");
  const files = await readdir(join(out, entries[0]!));
  for (const f of ["trainer_state.json", "optimizer_shards.json", "optimizer-shard-0-of-2.safetensors", "optimizer-shard-1-of-2.safetensors", "adapter_model.safetensors"]) assert.ok(files.includes(f), `${f} in ${files.join(", ")}`);
  const step = Number(saved[1]);
  const resumed = spawnSync(process.execPath, ["bin/tuna.js", "train", ...flags(out, 2), "--max_steps", String(step + 1), "--resume_from_checkpoint", "true"], { cwd: root, encoding: "utf8", timeout: 170_000 });
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stderr, new RegExp(`resuming from .*checkpoint-${step} \\(step ${step}\\)`));
});

void test("DeepSpeed offload settings are said, not ignored: nvme falls back to CPU memory, parameter offload keeps parameters on the device", { timeout: 120_000 }, async () => {
  const { writeFile } = await import("node:fs/promises");
  const config = join(tmp, "offload-nvme.yaml");
  await writeFile(config, "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 2\n  offload_optimizer_device: nvme\n  offload_param_device: cpu\nnum_processes: 1\n");
  const out = join(tmp, "offload-nvme");
  const r = spawnSync(process.execPath, ["bin/tuna.js", "train", "--config_file", config, ...flags(out, 1), "--max_steps", "1"], { cwd: root, encoding: "utf8", timeout: 100_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /note: offload to nvme is not implemented; tuna offloads the optimizer to CPU memory instead/);
  assert.match(r.stderr, /note: parameter offload: the parameters stay on the device/);
});

void test("evaluation in a job: every rank evaluates its share, the sums are combined exactly; every eval token counted once, eval_loss as one process's (within 1e-6: the runs' parameters differ by float order)", { timeout: 180_000 }, async () => {
  const { mkdir, writeFile } = await import("node:fs/promises");
  const data = join(tmp, "eval-data");
  await mkdir(data, { recursive: true });
  const rows = await readFile(join(root, "test/fixtures/chat-small.jsonl"), "utf8");
  await writeFile(join(data, "train.jsonl"), rows);
  await writeFile(join(data, "test.jsonl"), rows.split("\n").slice(0, 7).join("\n") + "\n");
  const withEval = (out: string, ga: number): string[] => [
    ...flags(out, ga).map((f) => (f.endsWith("chat-small.jsonl") ? data : f === "train" ? "train,test" : f)),
    "--eval_strategy", "steps", "--eval_steps", "2", "--per_device_eval_batch_size", "1",
  ];
  const single = join(tmp, "eval-single");
  const one = spawnSync(process.execPath, ["bin/tuna.js", "train", ...withEval(single, 2)], { cwd: root, encoding: "utf8", timeout: 170_000 });
  assert.equal(one.status, 0, one.stderr);
  const multi = join(tmp, "eval-multi");
  const two = spawnSync(process.execPath, ["bin/tuna.js", "launch", "--nproc_per_node", "2", "--master_port", String(await freePort()), "tuna", "train", ...withEval(multi, 1)], { cwd: root, encoding: "utf8", timeout: 170_000 });
  assert.equal(two.status, 0, two.stderr);
  const evals = async (out: string): Promise<{ step: number; eval_loss: number; eval_tokens: number }[]> =>
    (await readFile(join(out, "metrics.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as { step: number; eval_loss: number; eval_tokens: number }).filter((e) => "eval_loss" in e);
  const a = await evals(single);
  const b = await evals(multi);
  assert.equal(a.length, 3, JSON.stringify(a));
  assert.deepEqual(b.map((e) => [e.step, e.eval_tokens]), a.map((e) => [e.step, e.eval_tokens]), "every eval token counted once");
  b.forEach((e, i) => {
    // Parameters agree to ~1e-7 between the runs (float sums in another order), so the eval losses do too.
    assert.ok(relative(e.eval_loss, a[i]!.eval_loss) < 1e-6, `step ${e.step}: ${e.eval_loss} vs ${a[i]!.eval_loss}`);
  });
});

for (const [label, extra, file] of [
  ["QLoRA (NF4, double quantization)", ["--use_4bit_quantization", "--bnb_4bit_quant_type", "nf4", "--use_nested_quant"], "adapter_model.safetensors"],
  ["full fine-tuning", ["--use_peft_lora", "false"], "model.safetensors"],
] as const) {
  void test(`2 ranks reproduce one process for ${label} (losses and grad norms within 1e-6)`, { timeout: 180_000 }, async () => {
    const single = join(tmp, `single-${file}-${extra.length}`);
    const one = spawnSync(process.execPath, ["bin/tuna.js", "train", ...flags(single, 2), ...extra], { cwd: root, encoding: "utf8", timeout: 170_000 });
    assert.equal(one.status, 0, one.stderr);
    const multi = join(tmp, `multi-${file}-${extra.length}`);
    const two = spawnSync(process.execPath, ["bin/tuna.js", "launch", "--nproc_per_node", "2", "--master_port", String(await freePort()), "tuna", "train", ...flags(multi, 1), ...extra], { cwd: root, encoding: "utf8", timeout: 170_000 });
    assert.equal(two.status, 0, two.stderr);
    const metrics = async (out: string): Promise<{ loss: number; grad_norm: number }[]> =>
      (await readFile(join(out, "metrics.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as { loss: number; grad_norm: number }).filter((m) => "loss" in m);
    const a = await metrics(single);
    const b = await metrics(multi);
    assert.equal(b.length, 5);
    b.forEach((m, i) => {
      assert.ok(relative(m.loss, a[i]!.loss) < 1e-6, `step ${i + 1}: loss ${m.loss} vs ${a[i]!.loss}`);
      assert.ok(relative(m.grad_norm, a[i]!.grad_norm) < 1e-6, `step ${i + 1}: grad norm ${m.grad_norm} vs ${a[i]!.grad_norm}`);
    });
    const { stat } = await import("node:fs/promises");
    assert.ok((await stat(join(multi, file))).size > 0, `${file} written`);
  });
}

void test("LoRA dropout 0.1 and NEFTune (the seed workflow's settings): 2 ranks reproduce one process, and a 2-rank checkpoint resumes on 1 exactly", { timeout: 240_000 }, async () => {
  const noisy = (out: string, ga: number, extra: string[] = []): string[] => [
    ...flags(out, ga).map((f, i, all) => (all[i - 1] === "--lora_dropout" ? "0.1" : f)),
    "--neftune_noise_alpha", "5", "--save_strategy", "steps", "--save_steps", "2", ...extra,
  ];
  const single = join(tmp, "noisy-single");
  const one = spawnSync(process.execPath, ["bin/tuna.js", "train", ...noisy(single, 2)], { cwd: root, encoding: "utf8", timeout: 170_000 });
  assert.equal(one.status, 0, one.stderr);
  const multi = join(tmp, "noisy-multi");
  const two = spawnSync(process.execPath, ["bin/tuna.js", "launch", "--nproc_per_node", "2", "--master_port", String(await freePort()), "tuna", "train", ...noisy(multi, 1)], { cwd: root, encoding: "utf8", timeout: 170_000 });
  assert.equal(two.status, 0, two.stderr);
  const a = await readRun(single);
  const b = await readRun(multi);
  b.metrics.forEach((m, i) => {
    assert.ok(relative(m.loss, a.metrics[i]!.loss) < 1e-6, `step ${m.step}: loss ${m.loss} vs ${a.metrics[i]!.loss}`);
  });
  // The 2-rank run's checkpoint-2, resumed by one process: steps 3-5 as the uninterrupted run.
  const resumed = spawnSync(process.execPath, ["bin/tuna.js", "train", ...noisy(multi, 2, ["--resume_from_checkpoint", join(multi, "checkpoint-2")])], { cwd: root, encoding: "utf8", timeout: 170_000 });
  assert.equal(resumed.status, 0, resumed.stderr);
  const c = await readRun(multi);
  assert.ok(relative(c.metrics.at(-1)!.loss, a.metrics.at(-1)!.loss) < 1e-6, `resumed step 5: ${c.metrics.at(-1)!.loss} vs ${a.metrics.at(-1)!.loss}`);
  for (const [name, values] of c.adapter) {
    const ref = a.adapter.get(name)!;
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(values[i]! - ref[i]!));
    assert.ok(worst < 1e-6, `${name} differs by ${worst}`);
  }
});

void test("two machines' launchers (--nnodes 2, --node_rank 0 and 1, 2 processes each) form one 4-rank job that reproduces one process", { timeout: 240_000 }, async () => {
  const { spawn } = await import("node:child_process");
  const single = join(tmp, "nodes-single");
  const one = spawnSync(process.execPath, ["bin/tuna.js", "train", ...flags(single, 4)], { cwd: root, encoding: "utf8", timeout: 170_000 });
  assert.equal(one.status, 0, one.stderr);
  const out = join(tmp, "nodes");
  const port = String(await freePort());
  const node = (rank: number): Promise<{ code: number | null; err: string }> =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, ["bin/tuna.js", "launch", "--nnodes", "2", "--node_rank", String(rank), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", port, "tuna", "train", ...flags(out, 1)], { cwd: root, stdio: ["ignore", "ignore", "pipe"] });
      let err = "";
      child.stderr.on("data", (d: Buffer) => (err += d.toString()));
      child.on("exit", (code) => {
        resolve({ code, err });
      });
    });
  // The second machine starts first: its ranks wait for rank 0's store.
  const second = node(1);
  await new Promise((r) => setTimeout(r, 500));
  const [b, a] = await Promise.all([second, node(0)]);
  assert.equal(a.code, 0, a.err);
  assert.equal(b.code, 0, b.err);
  const x = await readRun(single);
  const y = await readRun(out);
  y.metrics.forEach((m, i) => {
    assert.ok(relative(m.loss, x.metrics[i]!.loss) < 1e-6, `step ${m.step}: ${m.loss} vs ${x.metrics[i]!.loss}`);
  });
  const logged = JSON.parse((await readFile(join(out, "metrics.jsonl"), "utf8")).split("\n")[0]!) as Record<string, number>;
  assert.ok("peak_memory_gib_rank_3" in logged, "four ranks logged");
});

void test("ZeRO-3 (QLoRA with DoRA, 3 ranks): the frozen 4-bit layers sharded and gathered per layer (DoRA's magnitudes from the gathered rows); a whole epoch (ranks with fewer micro-batches at its end) and evaluation reproduce one process", { timeout: 240_000 }, async () => {
  const { mkdir, writeFile } = await import("node:fs/promises");
  const data = join(tmp, "zero3-data");
  await mkdir(data, { recursive: true });
  const rows = await readFile(join(root, "test/fixtures/chat-small.jsonl"), "utf8");
  // 22 rows pack into 11 sequences: the epoch's last step has 2 micro-batches for 3 ranks, so rank 2 runs an
  // empty one to gather the layers with the others; 7 eval rows leave the ranks uneven there too.
  await writeFile(join(data, "train.jsonl"), rows.split("\n").slice(0, 22).join("\n") + "\n");
  await writeFile(join(data, "test.jsonl"), rows.split("\n").slice(0, 7).join("\n") + "\n");
  const config = join(tmp, "zero3.yaml");
  await writeFile(config, `compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 3\nnum_processes: 3\nmain_process_port: ${await freePort()}\n`);
  const zeroFlags = (out: string, ga: number): string[] => [
    ...flags(out, ga).map((f) => (f.endsWith("chat-small.jsonl") ? data : f === "train" ? "train,test" : f)).filter((f, i, all) => f !== "--max_steps" && all[i - 1] !== "--max_steps"),
    "--num_train_epochs", "1", "--use_4bit_quantization", "--bnb_4bit_quant_type", "nf4", "--use_nested_quant",
    "--eval_strategy", "epoch", "--per_device_eval_batch_size", "1", "--use_dora", "True",
  ];
  const single = join(tmp, "zero3-single");
  const one = spawnSync(process.execPath, ["bin/tuna.js", "train", ...zeroFlags(single, 3)], { cwd: root, encoding: "utf8", timeout: 170_000 });
  assert.equal(one.status, 0, one.stderr);
  const out = join(tmp, "zero3");
  const r = spawnSync(process.execPath, ["bin/tuna.js", "train", "--config_file", config, ...zeroFlags(out, 1)], { cwd: root, encoding: "utf8", timeout: 170_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /ZeRO-3: this rank keeps/);
  const entries = async (dir: string): Promise<Record<string, number>[]> => (await readFile(join(dir, "metrics.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as Record<string, number>);
  const a = await entries(single);
  const b = await entries(out);
  const losses = (e: Record<string, number>[]): number[] => e.filter((x) => "loss" in x).map((x) => x.loss!);
  const evals = (e: Record<string, number>[]): number[] => e.filter((x) => "eval_loss" in x).map((x) => x.eval_loss!);
  assert.equal(losses(b).length, losses(a).length);
  assert.equal(losses(a).length, 4, "11 sequences at 3 a step: 4 steps, the last of 2");
  losses(b).forEach((l, i) => {
    assert.ok(relative(l, losses(a)[i]!) < 1e-6, `step ${i + 1}: ${l} vs ${losses(a)[i]!}`);
  });
  assert.equal(evals(b).length, 1);
  assert.ok(relative(evals(b)[0]!, evals(a)[0]!) < 1e-6, `eval ${evals(b)[0]!} vs ${evals(a)[0]!}`);
  const x = await readRun(single);
  const y = await readRun(out);
  assert.equal([...y.adapter.keys()].filter((n) => n.endsWith(".lora_magnitude_vector")).length, 14, "DoRA's magnitudes are saved");
  for (const [name, values] of y.adapter) {
    const ref = x.adapter.get(name)!;
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(values[i]! - ref[i]!));
    assert.ok(worst < 1e-6, `${name} differs by ${worst}`);
  }
});

void test("ZeRO-3 checkpoints resume on another number of ranks (3 -> 2) exactly; the adapter merges with tuna merge", { timeout: 240_000 }, async () => {
  const { writeFile } = await import("node:fs/promises");
  const zero3 = async (world: number): Promise<string> => {
    const config = join(tmp, `zero3-resume-${world}.yaml`);
    await writeFile(config, `compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 3\nnum_processes: ${world}\nmain_process_port: ${await freePort()}\n`);
    return config;
  };
  const run = (args: string[]): void => {
    const r = spawnSync(process.execPath, ["bin/tuna.js", ...args], { cwd: root, encoding: "utf8", timeout: 170_000 });
    assert.equal(r.status, 0, r.stderr);
  };
  const saves = ["--save_strategy", "steps", "--save_steps", "2"];
  const straight = join(tmp, "zero3-resume-straight");
  run(["train", ...flags(straight, 6), ...saves]);
  const out = join(tmp, "zero3-resume");
  run(["train", "--config_file", await zero3(3), ...flags(out, 2), ...saves]);
  run(["train", "--config_file", await zero3(2), ...flags(out, 3), ...saves, "--resume_from_checkpoint", join(out, "checkpoint-2")]);
  const a = await readRun(straight);
  const b = await readRun(out);
  assert.ok(relative(b.metrics.at(-1)!.loss, a.metrics.at(-1)!.loss) < 1e-6, `step 5: ${b.metrics.at(-1)!.loss} vs ${a.metrics.at(-1)!.loss}`);
  for (const [name, values] of b.adapter) {
    const ref = a.adapter.get(name)!;
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(values[i]! - ref[i]!));
    assert.ok(worst < 1e-6, `${name} differs by ${worst}`);
  }
  run(["merge", join(root, "examples/tiny-llama"), "--adapter", out, "--output_dir", join(tmp, "zero3-merged")]);
  const { stat } = await import("node:fs/promises");
  assert.ok((await stat(join(tmp, "zero3-merged", "model.safetensors"))).size > 0);
});

void test("FSDP HYBRID_SHARD on two machines' launchers of 2 ranks: layers sharded within each machine (each rank holds 1/2, not 1/4), the same run as one process", { timeout: 240_000 }, async () => {
  const { spawn } = await import("node:child_process");
  const { writeFile } = await import("node:fs/promises");
  const single = join(tmp, "hybrid-single");
  const qlora = ["--use_4bit_quantization", "--bnb_4bit_quant_type", "nf4", "--use_nested_quant"];
  const one = spawnSync(process.execPath, ["bin/tuna.js", "train", ...flags(single, 4), ...qlora], { cwd: root, encoding: "utf8", timeout: 170_000 });
  assert.equal(one.status, 0, one.stderr);
  const config = join(tmp, "hybrid.yaml");
  await writeFile(config, "compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nfsdp_config:\n  fsdp_sharding_strategy: HYBRID_SHARD\nnum_machines: 2\nnum_processes: 4\n");
  const out = join(tmp, "hybrid");
  const port = String(await freePort());
  const node = (rank: number): Promise<{ code: number | null; err: string }> =>
    new Promise((resolve) => {
      const args = ["bin/tuna.js", "launch", "--nnodes", "2", "--node_rank", String(rank), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", port];
      const child = spawn(process.execPath, [...args, "tuna", "train", "--config_file", config, ...flags(out, 1), ...qlora], { cwd: root, stdio: ["ignore", "ignore", "pipe"] });
      let err = "";
      child.stderr.on("data", (d: Buffer) => (err += d.toString()));
      child.on("exit", (code) => {
        resolve({ code, err });
      });
    });
  const [a, b] = await Promise.all([node(0), node(1)]);
  assert.equal(a.code, 0, a.err);
  assert.equal(b.code, 0, b.err);
  const kept = /this rank keeps ([\d.]+) KiB of the ([\d.]+) KiB/.exec(a.err);
  assert.ok(kept !== null, a.err);
  const ratio = Number(kept[1]) / Number(kept[2]);
  assert.ok(ratio > 0.45 && ratio < 0.6, `rank 0 keeps ${kept[1]} of ${kept[2]} MiB (a half, its machine's share)`);
  const x = await readRun(single);
  const y = await readRun(out);
  assert.equal(y.metrics.length, x.metrics.length);
  y.metrics.forEach((m, i) => {
    assert.ok(relative(m.loss, x.metrics[i]!.loss) < 1e-6, `step ${m.step}: ${m.loss} vs ${x.metrics[i]!.loss}`);
  });
  for (const [name, values] of y.adapter) {
    const ref = x.adapter.get(name)!;
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(values[i]! - ref[i]!));
    assert.ok(worst < 1e-6, `${name} differs by ${worst}`);
  }
});

void test("machines that hold different files under the same model path (another config.json): every rank fails before training, naming the rank", { timeout: 120_000 }, async () => {
  const { spawn } = await import("node:child_process");
  const { cp, mkdir, writeFile } = await import("node:fs/promises");
  const machines = [join(tmp, "mixed-a"), join(tmp, "mixed-b")];
  for (const m of machines) {
    await mkdir(m, { recursive: true });
    await cp(join(root, "examples/tiny-llama"), join(m, "model"), { recursive: true });
  }
  const cfg = JSON.parse(await readFile(join(machines[1]!, "model", "config.json"), "utf8")) as Record<string, unknown>;
  await writeFile(join(machines[1]!, "model", "config.json"), JSON.stringify({ ...cfg, rms_norm_eps: cfg["rms_norm_eps"] === 1e-6 ? 1e-5 : 1e-6 }));
  const port = String(await freePort());
  // The same relative paths (so the same configuration), run from each machine's own folder.
  const args = flags("out", 1).map((f) => (f === join(root, "examples/tiny-llama") ? "model" : f));
  const node = (rank: number): Promise<{ code: number | null; err: string }> =>
    new Promise((resolve) => {
      const launch = ["launch", "--nnodes", "2", "--node_rank", String(rank), "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", port];
      const child = spawn(process.execPath, [join(root, "bin/tuna.js"), ...launch, "tuna", "train", ...args], { cwd: machines[rank], stdio: ["ignore", "ignore", "pipe"] });
      let err = "";
      child.stderr.on("data", (d: Buffer) => (err += d.toString()));
      child.on("exit", (code) => {
        resolve({ code, err });
      });
    });
  const results = await Promise.all([node(0), node(1)]);
  for (const r of results) {
    assert.notEqual(r.code, 0);
    assert.match(r.err, /error \[DIST\]: rank 1 of 2 loaded a different model .* than rank 0\. Give every machine the same files/);
    assert.doesNotMatch(r.err, /step 1\//);
  }
});

void test("ZeRO-3 with Phi-3's fused qkv_proj / gate_up_proj (NF4 at load): each part sharded as a row range, the same run as one process", { timeout: 240_000 }, async () => {
  const { copyFile, mkdir, writeFile } = await import("node:fs/promises");
  const { writeRandomModel } = await import("../../src/hf/random-init.ts");
  const model = join(tmp, "tiny-phi3");
  await mkdir(model, { recursive: true });
  const base = JSON.parse(await readFile(join(root, "examples/tiny-llama/config.json"), "utf8")) as Record<string, unknown>;
  await writeRandomModel(model, { ...base, architectures: ["Phi3ForCausalLM"], model_type: "phi3", tie_word_embeddings: false }, { seed: 8, dtype: "BF16" });
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) await copyFile(join(root, "examples/tiny-llama", f), join(model, f));
  const config = join(tmp, "zero3-phi3.yaml");
  await writeFile(config, `compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 3\nnum_processes: 2\nmain_process_port: ${await freePort()}\n`);
  const phiFlags = (out: string, ga: number): string[] => [
    ...flags(out, ga).map((f) => (f === join(root, "examples/tiny-llama") ? model : f)),
    "--use_4bit_quantization", "--lora_target_modules", "all-linear", "--max_steps", "3",
  ];
  const single = join(tmp, "zero3-phi3-single");
  const one = spawnSync(process.execPath, ["bin/tuna.js", "train", ...phiFlags(single, 2)], { cwd: root, encoding: "utf8", timeout: 170_000 });
  assert.equal(one.status, 0, one.stderr);
  const out = join(tmp, "zero3-phi3");
  const r = spawnSync(process.execPath, ["bin/tuna.js", "train", "--config_file", config, ...phiFlags(out, 1)], { cwd: root, encoding: "utf8", timeout: 170_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /ZeRO-3: this rank keeps/);
  const x = await readRun(single);
  const y = await readRun(out);
  assert.equal(y.metrics.length, x.metrics.length);
  y.metrics.forEach((m, i) => {
    assert.ok(relative(m.loss, x.metrics[i]!.loss) < 1e-6, `step ${m.step}: ${m.loss} vs ${x.metrics[i]!.loss}`);
  });
  assert.ok([...y.adapter.keys()].some((k) => k.endsWith("qkv_proj.lora_B.weight")));
  for (const [name, values] of y.adapter) {
    const ref = x.adapter.get(name)!;
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(values[i]! - ref[i]!));
    assert.ok(worst < 1e-6, `${name} differs by ${worst}`);
  }
});
