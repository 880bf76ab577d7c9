// The trainer's own files in a checkpoint: trainer_state.json (HF's format), optimizer.safetensors
// (the exact f32 trainable parameters and AdamW moments), rng_state.json; and reading them back.
import { join } from "node:path";
import type { Backend } from "../backend/types.ts";
import { openSafetensors } from "../io/safetensors/reader.ts";
import { decodeToFloat32 } from "../io/safetensors/convert.ts";
import { writeSafetensors } from "../io/safetensors/writer.ts";
import type { TrainableBuffers } from "../model/llama/params.ts";
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
      { name: "exp_avg", dtype: "F32", shape: [n], data: bytes(await flat(snap.optimizer.m)) },
      { name: "exp_avg_sq", dtype: "F32", shape: [n], data: bytes(await flat(snap.optimizer.v)) },
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

/** Reads a checkpoint written by writeTrainerFiles; the trainable layout must be the same as now. */
export async function readResumeState(dir: string, trainable: TrainableBuffers): Promise<ResumeState> {
  const state = (await readJsonFile(join(dir, TRAINER_STATE_FILE), "trainer state")) as {
    global_step: number;
    log_history: LogEntry[];
    tuna_total_loss?: number;
  };
  const rng = (await readJsonFile(join(dir, RNG_FILE), "RNG state")) as { dropout: RngState; neftune: RngState };
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
    const read = async (name: string): Promise<Float32Array> => decodeToFloat32(await file.readTensor(name), "F32");
    return {
      globalStep: state.global_step,
      logHistory: state.log_history,
      params: await read("params"),
      m: await read("exp_avg"),
      v: await read("exp_avg_sq"),
      optimizerStep: step,
      dropoutRng: rng.dropout,
      neftuneRng: rng.neftune,
      totalLoss: state.tuna_total_loss ?? 0,
    };
  } finally {
    await file.close();
  }
}
