// report_to mlflow: a training run lands in MLflow's file store as mlflow's FileStore lays it out (what
// `mlflow ui` reads): the Default experiment, a run with its name, times and FINISHED status, the
// configuration as params, every logged number as "<time> <value> <step>" lines, tags; report_to wandb is
// refused with the reason and what to use instead. (Checked against the layout here; mlflow's own reader is
// not installable on this machine.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import YAML from "yaml";
import { runCliWithEnv } from "../../cli/run-cli.ts";
import { createMlflowRun, mlflowRoot } from "../../../src/train/logging/mlflow.ts";

const root = resolve(import.meta.dirname, "../../..");

void test("a tuna train run with report_to mlflow writes mlflow's file store", async () => {
  const tmp = await mkdtemp(join(tmpdir(), "tuna-mlflow-"));
  const store = join(tmp, "mlruns");
  const out = join(tmp, "out");
  const r = await runCliWithEnv(
    ["train", "--model_name_or_path", join(root, "examples/tiny-llama"), "--dataset_name", join(root, "test/fixtures/chat-small.jsonl"), "--splits", "train",
      "--chat_template_format", "chatml", "--use_peft_lora", "--lora_r", "4", "--packing", "--max_seq_length", "48", "--max_steps", "3", "--logging_steps", "1",
      "--save_strategy", "no", "--device", "cpu", "--report_to", "mlflow", "--run_name", "my run", "--output_dir", out],
    { MLFLOW_TRACKING_URI: `file://${store}` },
  );
  assert.equal(r.code, 0, r.err);
  const experiment = YAML.parse(await readFile(join(store, "0", "meta.yaml"), "utf8")) as Record<string, unknown>;
  assert.equal(experiment["name"], "Default");
  assert.equal(experiment["experiment_id"], "0");
  assert.equal(experiment["lifecycle_stage"], "active");
  const runs = (await readdir(join(store, "0"))).filter((f) => f !== "meta.yaml");
  assert.equal(runs.length, 1);
  const runDir = join(store, "0", runs[0]!);
  assert.match(runs[0]!, /^[0-9a-f]{32}$/);
  const meta = YAML.parse(await readFile(join(runDir, "meta.yaml"), "utf8")) as Record<string, unknown>;
  assert.equal(meta["run_id"], runs[0]);
  assert.equal(meta["run_uuid"], runs[0]);
  assert.equal(meta["run_name"], "my run");
  assert.equal(meta["status"], 3, "FINISHED");
  assert.equal(meta["experiment_id"], "0");
  assert.ok(typeof meta["end_time"] === "number" && meta["end_time"] >= (meta["start_time"] as number));
  assert.equal(meta["artifact_uri"], `file://${runDir}/artifacts`);
  assert.equal(await readFile(join(runDir, "tags", "mlflow.runName"), "utf8"), "my run");
  assert.equal(await readFile(join(runDir, "params", "learning_rate"), "utf8"), "0.00005");
  assert.equal(await readFile(join(runDir, "params", "lora_r"), "utf8"), "4");
  const loss = (await readFile(join(runDir, "metrics", "loss"), "utf8")).trim().split("\n").map((l) => l.split(" "));
  assert.deepEqual(loss.map((p) => p[2]), ["1", "2", "3"]);
  const logged = (await readFile(join(out, "metrics.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as { loss?: number }).filter((e) => e.loss !== undefined);
  assert.deepEqual(loss.map((p) => Number(p[1])), logged.map((e) => e.loss));
  assert.ok(loss.every((p) => /^\d{13}$/.test(p[0]!)));
  assert.ok((await readFile(join(runDir, "metrics", "train_loss"), "utf8")).trim().endsWith(" 3"));
});

void test("mlflow: keys with '/' become folders (DPO's rewards/chosen), '..' never leaves the run; a named experiment gets its own id; a server URI is refused", async () => {
  const tmp = await mkdtemp(join(tmpdir(), "tuna-mlflow-unit-"));
  let t = 1_700_000_000_000;
  const run = createMlflowRun({ root: tmp, experiment: "prefs", runName: "r", params: { a: 1, "../x": "y" }, now: () => t++ });
  run.logMetrics({ step: 2, "rewards/chosen": 0.5, note: "text" });
  run.finish("KILLED");
  const [id] = (await readdir(tmp)).filter((d) => d !== "0");
  assert.ok(id !== undefined && id !== "0");
  assert.equal((YAML.parse(await readFile(join(tmp, id, "meta.yaml"), "utf8")) as { name: string }).name, "prefs");
  assert.equal(await readFile(join(run.dir, "metrics", "rewards", "chosen"), "utf8"), "1700000000001 0.5 2\n");
  assert.equal(await readFile(join(run.dir, "params", "x"), "utf8"), "y");
  assert.equal((YAML.parse(await readFile(join(run.dir, "meta.yaml"), "utf8")) as { status: number }).status, 5);
  assert.equal(mlflowRoot({}, "/work"), "/work/mlruns");
  assert.equal(mlflowRoot({ MLFLOW_TRACKING_URI: "runs/ml" }, "/work"), "/work/runs/ml");
  assert.throws(() => mlflowRoot({ MLFLOW_TRACKING_URI: "http://localhost:5000" }), /tracking server; tuna writes mlflow's file store only/);
});

void test("report_to wandb is refused, saying why and what to use instead", async () => {
  const r = await runCliWithEnv(["train", "--model_name_or_path", "/m", "--dataset_name", "x", "--report_to", "wandb"], {});
  assert.equal(r.code, 1);
  assert.match(r.err, /report_to wandb is not supported: W&B.s offline run files .*`wandb sync --sync-tensorboard/);
});
