// The trainer's own files in a checkpoint: trainer_state.json (HF's format), optimizer.safetensors
// (the exact f32 trainable parameters and AdamW moments), rng_state.json; and reading them back.
// Under ZeRO every rank writes its own moments (optimizer-shard-R-of-W.safetensors, its range of the flat
// buffer in the metadata), optimizer.safetensors keeps the parameters only and optimizer_shards.json, the
// manifest, records the world size, the stage and the files. Reading assembles the whole buffer's moments
// from the shards, so a checkpoint of any world size resumes on any other. The RNG streams are global
// (dropout masks are drawn per micro-batch from a counter, not per rank), so one rng_state.json serves all.
import { basename, join } from "node:path";
import type { Backend } from "../backend/types.ts";
import { openSafetensors } from "../io/safetensors/reader.ts";
import { decodeToFloat32 } from "../io/safetensors/convert.ts";
import { writeSafetensors } from "../io/safetensors/writer.ts";
import type { TrainableBuffers } from "../model/trainable.ts";
import { TunaError } from "../util/errors.ts";
import { readJsonFile } from "../util/json-file.ts";
import { TRAINER_STATE_FILE, writeJson } from "./checkpoint.ts";
import type { LogEntry, ResumeState, TrainerSnapshot } from "./trainer.ts";
import { bytesOf } from "../util/bytes.ts";

export const OPTIMIZER_FILE = "optimizer.safetensors";
export const RNG_FILE = "rng_state.json";
export const OPTIMIZER_SHARDS_FILE = "optimizer_shards.json";

export function optimizerShardFile(rank: number, worldSize: number): string {
  return `optimizer-shard-${rank}-of-${worldSize}.safetensors`;
}

function layoutOf(trainable: TrainableBuffers): string {
  return JSON.stringify(trainable.entries.map((e) => [e.name, e.size]));
}

/** What a rank writes into a sharded checkpoint: its range of the AdamW moments. */
export async function writeOptimizerShard(dir: string, trainable: TrainableBuffers, snap: TrainerSnapshot): Promise<void> {
  const { m, v, lo, hi, total } = snap.moments;
  await writeSafetensors(
    join(dir, optimizerShardFile(snap.rank, snap.worldSize)),
    [
      { name: "exp_avg", dtype: "F32", shape: [hi - lo], data: bytesOf(m.subarray(0, hi - lo)) },
      { name: "exp_avg_sq", dtype: "F32", shape: [hi - lo], data: bytesOf(v.subarray(0, hi - lo)) },
    ],
    { format: "pt", step: String(snap.optimizer.step), layout: layoutOf(trainable), lo: String(lo), hi: String(hi), total: String(total), rank: String(snap.rank), world_size: String(snap.worldSize) },
  );
}

/** Whether the snapshot's moments are a shard (each rank writes its own) rather than the whole buffer. */
export function isShardedSnapshot(snap: TrainerSnapshot): boolean {
  return snap.moments.lo !== 0 || snap.moments.hi !== snap.moments.total;
}

type RngState = [number, number, number, number];

export interface TrainerStateMeta {
  numTrainEpochs: number;
  loggingSteps: number;
  evalSteps: number;
  saveSteps: number;
  trainBatchSize: number;
  /** Recorded in the shard manifest of a sharded save. */
  zeroStage?: number;
}

/**
 * Writes optimizer.safetensors (with the moments, or with the manifest of the ranks' shards beside it),
 * rng_state.json and (last, as the completeness marker) trainer_state.json.
 */
export async function writeTrainerFiles(dir: string, backend: Backend, trainable: TrainableBuffers, snap: TrainerSnapshot, meta: TrainerStateMeta): Promise<void> {
  const n = trainable.total;
  const flat = async (t: typeof trainable.params): Promise<Float32Array> => (await backend.downloadF32(t)).subarray(0, n);
  const sharded = isShardedSnapshot(snap);
  await writeSafetensors(
    join(dir, OPTIMIZER_FILE),
    [
      { name: "params", dtype: "F32", shape: [n], data: bytesOf(await flat(trainable.params)) },
      ...(sharded
        ? []
        : [
            { name: "exp_avg", dtype: "F32" as const, shape: [n], data: bytesOf(snap.moments.m.subarray(0, n)) },
            { name: "exp_avg_sq", dtype: "F32" as const, shape: [n], data: bytesOf(snap.moments.v.subarray(0, n)) },
          ]),
    ],
    { format: "pt", step: String(snap.optimizer.step), layout: layoutOf(trainable) },
  );
  if (sharded) {
    const files = Array.from({ length: snap.worldSize }, (_, r) => optimizerShardFile(r, snap.worldSize));
    await writeJson(join(dir, OPTIMIZER_SHARDS_FILE), { format: 1, world_size: snap.worldSize, zero_stage: meta.zeroStage ?? 0, total: n, step: snap.optimizer.step, shards: files });
  }
  await writeJson(join(dir, RNG_FILE), { dropout: snap.dropoutRng, neftune: snap.neftuneRng });
  // HF's TrainerState fields (json.dumps(asdict(state), indent=2, sort_keys=True)).
  const state = {
    best_global_step: null,
    best_metric: null,
    best_model_checkpoint: null,
    epoch: snap.epoch,
    eval_steps: meta.evalSteps,
    global_step: snap.globalStep,
    is_hyper_param_search: false,
    is_local_process_zero: true,
    is_world_process_zero: true,
    log_history: snap.logHistory,
    logging_steps: meta.loggingSteps,
    max_steps: snap.maxSteps,
    num_input_tokens_seen: 0,
    num_train_epochs: meta.numTrainEpochs,
    save_steps: meta.saveSteps,
    stateful_callbacks: {},
    total_flos: 0,
    train_batch_size: meta.trainBatchSize,
    trial_name: null,
    trial_params: null,
    tuna_total_loss: snap.totalLoss,
  };
  await writeJson(join(dir, TRAINER_STATE_FILE), state);
}

function formatError(dir: string, file: string, problem: string): TunaError {
  return new TunaError(
    "FILE_FORMAT",
    `${join(dir, file)}: ${problem}; the checkpoint is damaged or was not written by tuna. Resume from another checkpoint-N, or start again.`,
  );
}

function checkRng(dir: string, value: unknown, name: string): RngState {
  const ok = Array.isArray(value) && value.length === 4 && value.every((v) => Number.isInteger(v) && (v as number) >= 0 && (v as number) < 2 ** 32);
  if (!ok) throw formatError(dir, RNG_FILE, `"${name}" is ${JSON.stringify(value)}, expected 4 unsigned 32-bit integers`);
  return value as RngState;
}

/** trainer_state.json's fields that resume uses, checked: types, and the step against the folder's name. */
function checkTrainerState(dir: string, raw: unknown): { globalStep: number; logHistory: LogEntry[]; totalLoss: number } {
  const state = (typeof raw === "object" && raw !== null ? raw : {}) as Record<string, unknown>;
  const step = state["global_step"];
  if (typeof step !== "number" || !Number.isSafeInteger(step) || step < 0) {
    throw formatError(dir, TRAINER_STATE_FILE, `global_step is ${JSON.stringify(step)}, expected a whole number >= 0`);
  }
  const named = /^checkpoint-(\d+)$/.exec(basename(dir));
  if (named !== null && Number(named[1]) !== step) {
    throw formatError(dir, TRAINER_STATE_FILE, `global_step is ${step} but the folder is ${basename(dir)}`);
  }
  const history = state["log_history"];
  const entryOk = (e: unknown): boolean =>
    typeof e === "object" && e !== null && !Array.isArray(e) && Object.values(e).every((v) => typeof v === "number" || v === null);
  if (!Array.isArray(history) || !history.every(entryOk)) {
    throw formatError(dir, TRAINER_STATE_FILE, "log_history is not a list of objects of numbers");
  }
  const total = state["tuna_total_loss"] ?? 0;
  if (typeof total !== "number" || !Number.isFinite(total)) {
    throw formatError(dir, TRAINER_STATE_FILE, `tuna_total_loss is ${JSON.stringify(total)}, expected a finite number`);
  }
  return { globalStep: step, logHistory: history as LogEntry[], totalLoss: total };
}

/** Reads a checkpoint written by writeTrainerFiles; the trainable layout must be the same as now. */
export async function readResumeState(dir: string, trainable: TrainableBuffers): Promise<ResumeState> {
  const state = checkTrainerState(dir, await readJsonFile(join(dir, TRAINER_STATE_FILE), "trainer state"));
  const rngRaw = (await readJsonFile(join(dir, RNG_FILE), "RNG state")) as Record<string, unknown> | null;
  const dropoutRng = checkRng(dir, rngRaw?.["dropout"], "dropout");
  const neftuneRng = checkRng(dir, rngRaw?.["neftune"], "neftune");
  const file = await openSafetensors(join(dir, OPTIMIZER_FILE));
  try {
    const layout = file.metadata?.["layout"];
    const step = Number(file.metadata?.["step"]);
    const expected = layoutOf(trainable);
    if (layout !== expected) {
      throw new TunaError(
        "CONFIG_INVALID",
        `${dir} was saved with other trainable tensors than this run has (different LoRA settings, target modules or model); resume with the settings it was trained with.`,
      );
    }
    // Every counted step is one optimizer step (a skipped non-finite step counts as neither).
    if (step !== state.globalStep) {
      throw formatError(dir, OPTIMIZER_FILE, `the optimizer made ${String(file.metadata?.["step"])} steps but trainer_state.json says ${state.globalStep}`);
    }
    const read = async (name: string): Promise<Float32Array> => decodeToFloat32(await file.readTensor(name), "F32");
    const params = await read("params");
    const moments = file.tensors.has("exp_avg") ? { m: await read("exp_avg"), v: await read("exp_avg_sq") } : await readShardedMoments(dir, expected, step, params.length);
    return {
      globalStep: state.globalStep,
      logHistory: state.logHistory,
      params,
      ...moments,
      optimizerStep: step,
      dropoutRng,
      neftuneRng,
      totalLoss: state.totalLoss,
    };
  } finally {
    await file.close();
  }
}

/** The whole buffer's moments from the ranks' shard files listed in optimizer_shards.json. */
async function readShardedMoments(dir: string, layout: string, step: number, total: number): Promise<{ m: Float32Array; v: Float32Array }> {
  const manifest = (await readJsonFile(join(dir, OPTIMIZER_SHARDS_FILE), "optimizer shard manifest")) as Record<string, unknown> | null;
  const shards = manifest?.["shards"];
  const world = manifest?.["world_size"];
  if (!Array.isArray(shards) || typeof world !== "number" || shards.length !== world || !shards.every((f) => typeof f === "string" && /^optimizer-shard-\d+-of-\d+\.safetensors$/.test(f))) {
    throw formatError(dir, OPTIMIZER_SHARDS_FILE, "it does not list one optimizer-shard-R-of-W.safetensors per rank");
  }
  const m = new Float32Array(total);
  const v = new Float32Array(total);
  const ranges: [number, number, string][] = [];
  for (const name of shards as string[]) {
    const file = await openSafetensors(join(dir, name));
    try {
      const meta = file.metadata ?? {};
      const lo = Number(meta["lo"]);
      const hi = Number(meta["hi"]);
      if (meta["layout"] !== layout || Number(meta["step"]) !== step || Number(meta["total"]) !== total) {
        throw formatError(dir, name, "its layout, step or size differs from optimizer.safetensors (a shard of another save?)");
      }
      if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi) || lo < 0 || hi < lo || hi > total) throw formatError(dir, name, `its range [${String(meta["lo"])}, ${String(meta["hi"])}) is not within the buffer of ${total}`);
      m.set(decodeToFloat32(await file.readTensor("exp_avg"), "F32").subarray(0, hi - lo), lo);
      v.set(decodeToFloat32(await file.readTensor("exp_avg_sq"), "F32").subarray(0, hi - lo), lo);
      ranges.push([lo, hi, name]);
    } finally {
      await file.close();
    }
  }
  // The shards must tile the buffer: no gap, no overlap.
  ranges.sort((a, b) => a[0] - b[0]);
  let covered = 0;
  for (const [lo, hi, name] of ranges) {
    if (lo !== covered) throw formatError(dir, name, `it starts at ${lo} but the shards before it end at ${covered}`);
    covered = hi;
  }
  if (covered !== total) throw formatError(dir, OPTIMIZER_SHARDS_FILE, `the shards cover ${covered} of ${total} values`);
  return { m, v };
}
