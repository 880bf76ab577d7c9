// Output folders and checkpoints that a careless or hostile run meets: --overwrite_output_dir clears the old
// run's checkpoints, damaged trainer_state.json is FILE_FORMAT, orphaned .tmp checkpoint folders are removed,
// the base model's folder and folders that cannot be made are refused at once, and a second run into a
// busy output_dir is refused by its lock. Ctrl-C (SIGINT) saves a checkpoint of the current step and exits
// 130; a second one exits at once.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "../cli/run-cli.ts";

const root = new URL("../..", import.meta.url).pathname;
const TINY = join(root, "examples/tiny-llama");
const DATA = join(root, "test/fixtures/chat-small.jsonl");
let tmp = "";

const flags = (out: string, extra: string[] = []): string[] => [
  "--model_name_or_path", TINY,
  "--dataset_name", DATA,
  "--splits", "train",
  "--chat_template_format", "chatml",
  "--use_peft_lora", "--lora_r", "2", "--lora_alpha", "4", "--lora_dropout", "0",
  "--packing", "--max_seq_length", "48",
  "--per_device_train_batch_size", "2",
  "--learning_rate", "1e-3", "--logging_steps", "1",
  "--save_steps", "2", "--seed", "3", "--report_to", "none",
  "--output_dir", out,
  ...extra,
];

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tuna-outdir-"));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const train = (args: string[]) => runCli(["train", ...args]);

void test("--overwrite_output_dir removes the previous run's checkpoints, so resume true cannot pick them", async () => {
  const out = join(tmp, "overwrite");
  assert.equal((await train(flags(out, ["--max_steps", "4"]))).code, 0);
  assert.deepEqual((await readdir(out)).filter((n) => n.startsWith("checkpoint-")).sort(), ["checkpoint-2", "checkpoint-4"]);
  const again = await train(flags(out, ["--max_steps", "2", "--overwrite_output_dir"]));
  assert.equal(again.code, 0, again.err);
  assert.match(again.err, /removed .*checkpoint-4 \(left by an earlier run\)/);
  assert.deepEqual((await readdir(out)).filter((n) => n.startsWith("checkpoint-")), ["checkpoint-2"]);
  const state = JSON.parse(await readFile(join(out, "checkpoint-2", "trainer_state.json"), "utf8")) as { max_steps: number };
  assert.equal(state.max_steps, 2, "checkpoint-2 is the new run's");
});

void test("a damaged trainer_state.json is a FILE_FORMAT error naming the file, not a stack or a silent run", async () => {
  const out = join(tmp, "damaged");
  assert.equal((await train(flags(out, ["--max_steps", "2"]))).code, 0);
  const state = join(out, "checkpoint-2", "trainer_state.json");
  const original = await readFile(state, "utf8");
  const cases: [string, (s: Record<string, unknown>) => void, RegExp][] = [
    ["a step that is not the folder's", (s) => (s.global_step = 999), /global_step is 999 but the folder is checkpoint-2/],
    ["a step of the wrong type", (s) => (s.global_step = "2"), /global_step is "2", expected a whole number/],
    ["a history that is not a list", (s) => (s.log_history = { step: 1 }), /log_history is not a list/],
  ];
  for (const [what, damage, message] of cases) {
    const s = JSON.parse(original) as Record<string, unknown>;
    damage(s);
    await writeFile(state, JSON.stringify(s));
    const r = await train(flags(join(tmp, `damaged-resume-${cases.findIndex((c) => c[0] === what)}`), ["--max_steps", "4", "--resume_from_checkpoint", join(out, "checkpoint-2")]));
    assert.equal(r.code, 1, `${what}: ${r.err}`);
    assert.match(r.err, /error \[FILE_FORMAT\]/, what);
    assert.match(r.err, message, what);
    assert.ok(!/\n\s+at /.test(r.err), `${what}: a stack trace was printed`);
  }
  await writeFile(join(out, "checkpoint-2", "rng_state.json"), JSON.stringify({ dropout: [1, 2, 3], neftune: [1, 2, 3, 4] }));
  await writeFile(state, original);
  const r = await train(flags(join(tmp, "damaged-rng"), ["--max_steps", "4", "--resume_from_checkpoint", join(out, "checkpoint-2")]));
  assert.equal(r.code, 1);
  assert.match(r.err, /rng_state\.json: "dropout" is \[1,2,3\]/);
});

void test("orphaned .checkpoint-N.tmp-PID folders of dead processes are removed; the base model's folder is refused", async () => {
  const out = join(tmp, "orphans");
  const dead = spawnSync(process.execPath, ["-e", "0"]).pid;
  await mkdir(join(out, `.checkpoint-6.tmp-${dead}`), { recursive: true });
  await writeFile(join(out, `.checkpoint-6.tmp-${dead}`, "adapter_model.safetensors"), "half written");
  const r = await train(flags(out, ["--max_steps", "2"]));
  assert.equal(r.code, 0, r.err);
  assert.ok(!existsSync(join(out, `.checkpoint-6.tmp-${dead}`)));

  const model = join(tmp, "model-copy");
  await cp(TINY, model, { recursive: true });
  const before = (await readdir(model)).sort();
  for (const target of [model, join(model, "sub")]) {
    const m = await train(flags(target, ["--max_steps", "2", "--model_name_or_path", model, "--overwrite_output_dir"]));
    assert.equal(m.code, 1);
    assert.match(m.err, /is the base model's folder/);
  }
  assert.deepEqual((await readdir(model)).sort(), before, "nothing was written into the model folder");
});

void test("an output_dir that cannot be created fails at once with the reason", async () => {
  const started = performance.now();
  const r = await train(flags("/proc/tuna-cannot-exist/out", ["--max_steps", "2"]));
  assert.equal(r.code, 1);
  assert.match(r.err, /error \[IO\]: cannot create output_dir \/proc\/tuna-cannot-exist\/out/);
  assert.ok(performance.now() - started < 20_000);
  const file = join(tmp, "a-file");
  await writeFile(file, "x");
  const f = await train(flags(join(file, "out"), ["--max_steps", "2"]));
  assert.equal(f.code, 1);
  assert.match(f.err, /error \[IO\]/);
});

void test("a second run into a busy output_dir is refused by its lock; a dead run's lock is taken over", async () => {
  const out = join(tmp, "locked");
  await mkdir(out, { recursive: true });
  await writeFile(join(out, ".tuna.lock"), JSON.stringify({ pid: process.pid, host: hostname(), started: "earlier" }));
  const r = await train(flags(out, ["--max_steps", "2"]));
  assert.equal(r.code, 1);
  assert.match(r.err, new RegExp(`is in use by another tuna run \\(pid ${process.pid} on ${hostname()}`));
  assert.deepEqual(await readdir(out), [".tuna.lock"], "the refused run wrote nothing");
  const dead = spawnSync(process.execPath, ["-e", "0"]).pid;
  await writeFile(join(out, ".tuna.lock"), JSON.stringify({ pid: dead, host: hostname(), started: "earlier" }));
  const ok = await train(flags(out, ["--max_steps", "2"]));
  assert.equal(ok.code, 0, ok.err);
  assert.ok(!existsSync(join(out, ".tuna.lock")), "the lock is released at the end");
});

void test("Ctrl-C saves a checkpoint of the current step and exits 130 with how to resume; resume continues; twice exits at once", { timeout: 240_000 }, async () => {
  const build = spawnSync(process.execPath, ["tools/build.mjs"], { cwd: root, encoding: "utf8" });
  assert.equal(build.status, 0, build.stderr);
  const out = join(tmp, "sigint");
  const args = flags(out, ["--max_steps", "400", "--save_strategy", "no"]);
  const child = spawn(process.execPath, ["bin/tuna.js", "train", ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  let signalled = false;
  child.stderr.on("data", (d: Buffer) => {
    err += d.toString();
    if (!signalled && /step 3\/400/.test(err)) {
      signalled = true;
      child.kill("SIGINT");
    }
  });
  const code = await new Promise<number | null>((done) => child.on("exit", (c) => { done(c); }));
  assert.equal(code, 130, err);
  const saved = /saved (\S+checkpoint-(\d+))\. Resume with the same command plus --resume_from_checkpoint true/.exec(err);
  assert.ok(saved !== null, err);
  const step = Number(saved[2]);
  assert.ok(step >= 3 && step < 400);
  const state = JSON.parse(await readFile(join(saved[1]!, "trainer_state.json"), "utf8")) as { global_step: number };
  assert.equal(state.global_step, step);
  assert.ok(!existsSync(join(out, "train_results.json")), "no final results for an interrupted run");

  const resumed = await train(flags(out, ["--max_steps", String(step + 2), "--save_strategy", "no", "--resume_from_checkpoint", "true"]));
  assert.equal(resumed.code, 0, resumed.err);
  assert.match(resumed.err, new RegExp(`resuming from .*checkpoint-${step} \\(step ${step}\\)`));

  // The second signal: a process that only waits (its event loop free) and watches for interrupts.
  const script = `import { watchInterrupts } from ${JSON.stringify(join(root, "src/train/interrupt.ts"))};
    const w = watchInterrupts((t) => console.error(t));
    console.error("ready");
    setTimeout(() => { console.error("ran to the end, signal " + w.signal()); process.exit(0); }, 20000);`;
  const twice = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  let err2 = "";
  let sentAt = 0;
  twice.stderr.on("data", (d: Buffer) => {
    err2 += d.toString();
    if (sentAt === 0 && err2.includes("ready")) {
      sentAt = performance.now();
      twice.kill("SIGINT");
      setTimeout(() => twice.kill("SIGINT"), 300);
    }
  });
  const code2 = await new Promise<number | null>((done) => twice.on("exit", (c) => { done(c); }));
  assert.equal(code2, 130, err2);
  assert.match(err2, /SIGINT: finishing the current step[\s\S]*SIGINT again: stopping now/);
  assert.ok(performance.now() - sentAt < 10_000);
});
