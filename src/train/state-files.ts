// The trainer's own files in a checkpoint: trainer_state.json (HF's format), optimizer.safetensors
// (the exact f32 trainable parameters and AdamW moments), rng_state.json; and reading them back.
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

export const OPTIMIZER_FILE = "optimizer.safetensors";
export const RNG_FILE = "rng_state.json";

type RngState = [number, number, number, number];

export interface TrainerStateMeta {
  numTrainEpochs: number;
  loggingSteps: number;
  evalSteps: number;
  saveSteps: number;
  trainBatchSize: number;
}

function bytes(values: Float32Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

/** Writes optimizer.safetensors, rng_state.json and (last, as the completeness marker) trainer_state.json. */
export async function writeTrainerFiles(dir: string, backend: Backend, trainable: TrainableBuffers, snap: TrainerSnapshot, meta: TrainerStateMeta): Promise<void> {
  const n = trainable.total;
  const flat = async (t: typeof trainable.params): Promise<Float32Array> => (await backend.downloadF32(t)).subarray(0, n);
  await writeSafetensors(
    join(dir, OPTIMIZER_FILE),
    [
      { name: "params", dtype: "F32", shape: [n], data: bytes(await flat(trainable.params)) },
      { name: "exp_avg", dtype: "F32", shape: [n], data: bytes(snap.moments.m.subarray(0, n)) },
      { name: "exp_avg_sq", dtype: "F32", shape: [n], data: bytes(snap.moments.v.subarray(0, n)) },
    ],
    { format: "pt", step: String(snap.optimizer.step), layout: JSON.stringify(trainable.entries.map((e) => [e.name, e.size])) },
  );
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
    const expected = JSON.stringify(trainable.entries.map((e) => [e.name, e.size]));
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
    return {
      globalStep: state.globalStep,
      logHistory: state.logHistory,
      params: await read("params"),
      m: await read("exp_avg"),
      v: await read("exp_avg_sq"),
      optimizerStep: step,
      dropoutRng,
      neftuneRng,
      totalLoss: state.totalLoss,
    };
  } finally {
    await file.close();
  }
}
