// report_to mlflow: a run in MLflow's file store (the mlruns/ folder `mlflow ui` reads), written as
// transformers' MLflowCallback fills it: the configuration as params, every logged number as a metric with
// its step, tags naming the run; its status FINISHED, FAILED or KILLED at the end. Layout (mlflow's FileStore):
//   <root>/<experiment id>/meta.yaml                 the experiment (id 0 = "Default")
//   <root>/<experiment id>/<run id>/meta.yaml        the run: name, times, status, artifact URI
//   .../<run id>/params/<key>, tags/<key>            one value per file
//   .../<run id>/metrics/<key>                        lines "<time ms> <value> <step>"
//   .../<run id>/artifacts/
// The root is MLFLOW_TRACKING_URI when it is a local path or file: URI (else ./mlruns, mlflow's default); the
// experiment is MLFLOW_EXPERIMENT_NAME (else Default). Hand-written: mlflow has no JavaScript client that
// writes its file store.
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { userInfo } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import YAML from "yaml";
import { TunaError } from "../../util/errors.ts";
import type { LogEntry } from "./log-entry.ts";

export type MlflowStatus = "FINISHED" | "FAILED" | "KILLED";
const STATUS = { RUNNING: 1, FINISHED: 3, FAILED: 4, KILLED: 5 } as const;
const SOURCE_TYPE_LOCAL = 4;
/** mlflow's limit on a param value (MAX_PARAM_VAL_LENGTH). */
const MAX_PARAM_LENGTH = 6000;

export interface MlflowRun {
  readonly dir: string;
  readonly runId: string;
  logMetrics(entry: LogEntry): void;
  finish(status: MlflowStatus): void;
}

/** The file store's root: MLFLOW_TRACKING_URI when it names a local folder, else ./mlruns. */
export function mlflowRoot(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): string {
  const uri = env["MLFLOW_TRACKING_URI"];
  if (uri === undefined || uri === "") return resolve(cwd, "mlruns");
  if (uri.startsWith("file:")) return fileURLToPath(uri);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(uri)) {
    throw new TunaError("CONFIG_INVALID", `report_to mlflow: MLFLOW_TRACKING_URI=${uri} is a tracking server; tuna writes mlflow's file store only. Unset it (./mlruns), or give a folder, then \`mlflow ui\` there.`);
  }
  return isAbsolute(uri) ? uri : resolve(cwd, uri);
}

function writeYaml(path: string, value: Record<string, unknown>): void {
  writeFileSync(path, YAML.stringify(value));
}

/** The id of the experiment named `name` under root, made when it does not exist yet. */
function experimentId(root: string, name: string, now: number): string {
  mkdirSync(root, { recursive: true });
  for (const id of readdirSync(root)) {
    const meta = join(root, id, "meta.yaml");
    if (!existsSync(meta)) continue;
    const parsed = YAML.parse(readFileSync(meta, "utf8")) as { name?: unknown } | null;
    if (parsed?.name === name) return id;
  }
  const id = name === "Default" ? "0" : String(Math.floor(now * 1000 + Math.random() * 1000));
  mkdirSync(join(root, id), { recursive: true });
  writeYaml(join(root, id, "meta.yaml"), {
    artifact_location: pathToFileURL(join(root, id)).href,
    creation_time: now,
    experiment_id: id,
    last_update_time: now,
    lifecycle_stage: "active",
    name,
  });
  return id;
}

/** A metric or param key as a relative path inside the run (mlflow keys may hold '/'; never '..'). */
function keyPath(key: string): string {
  const parts = key.split("/").filter((p) => p !== "" && p !== "." && p !== "..");
  return join(...(parts.length > 0 ? parts : ["_"]));
}

export function createMlflowRun(o: { root: string; experiment: string; runName: string; params: Readonly<Record<string, unknown>>; now?: () => number }): MlflowRun {
  const now = o.now ?? ((): number => Date.now());
  const started = now();
  const experiment = experimentId(o.root, o.experiment, started);
  const runId = randomUUID().replaceAll("-", "");
  const dir = join(o.root, experiment, runId);
  for (const sub of ["metrics", "params", "tags", "artifacts"]) mkdirSync(join(dir, sub), { recursive: true });
  const user = (() => {
    try {
      return userInfo().username;
    } catch {
      return "unknown";
    }
  })();
  const meta = (status: number, end: number | null): Record<string, unknown> => ({
    artifact_uri: pathToFileURL(join(dir, "artifacts")).href,
    end_time: end,
    entry_point_name: "",
    experiment_id: experiment,
    lifecycle_stage: "active",
    run_id: runId,
    run_name: o.runName,
    run_uuid: runId,
    source_name: "",
    source_type: SOURCE_TYPE_LOCAL,
    source_version: "",
    start_time: started,
    status,
    tags: [],
    user_id: user,
  });
  writeYaml(join(dir, "meta.yaml"), meta(STATUS.RUNNING, null));
  const tags: Record<string, string> = { "mlflow.runName": o.runName, "mlflow.user": user, "mlflow.source.type": "LOCAL", "mlflow.source.name": "tuna" };
  for (const [k, v] of Object.entries(tags)) writeFileSync(join(dir, "tags", k), v);
  for (const [k, v] of Object.entries(o.params)) {
    if (v === undefined) continue;
    const text = typeof v === "string" ? v : JSON.stringify(v);
    const path = join(dir, "params", keyPath(k));
    mkdirSync(join(path, ".."), { recursive: true });
    writeFileSync(path, text.length > MAX_PARAM_LENGTH ? text.slice(0, MAX_PARAM_LENGTH) : text);
  }
  return {
    dir,
    runId,
    logMetrics(entry) {
      const t = now();
      for (const [k, v] of Object.entries(entry)) {
        if (k === "step" || typeof v !== "number") continue;
        const path = join(dir, "metrics", keyPath(k));
        mkdirSync(join(path, ".."), { recursive: true });
        appendFileSync(path, `${t} ${v} ${entry.step}\n`);
      }
    },
    finish(status) {
      writeYaml(join(dir, "meta.yaml"), meta(STATUS[status], now()));
    },
  };
}
