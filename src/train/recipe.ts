// The `tuna train` recipe, top to bottom: check the output folder, load tokenizer and model, set up the
// chat format, prepare the data, quantize and inject LoRA, train with logs and checkpoints, save.
import { createHash } from "node:crypto";
import { join, resolve } from "node:path";
import { createBackend } from "../backend/factory.ts";
import type { Backend } from "../backend/types.ts";
import { describeLaunch, type LaunchConfig, type ResolvedTrainConfig, type TrainConfig } from "../config/index.ts";
import type { ShardingStage } from "./data-parallel.ts";
import { shardingOf } from "./sharding.ts";
import { prepareDatasets, type PreparedSplit } from "../data/prepare.ts";
import { specialTokenOverrides, trainPrepareOptions } from "../data/train-options.ts";
import { setupChatFormat } from "../data/chat-format.ts";
import { resolveModelPath } from "../hub/resolve.ts";
import { openModelFolder } from "../hf/folder.ts";
import { asTrainingModel, createCausalLm } from "../model/causal-lm/model.ts";
import { loadTokenizer } from "../tokenizer/load.ts";
import { TunaError } from "../util/errors.ts";
import { TUNA_VERSION } from "../util/version.ts";
import type { Collective } from "../dist/collective.ts";
import { joinJob, type JobMembership } from "../dist/job.ts";
import { collectiveForBackend, requestedTransport } from "../dist/gpu-collective.ts";
import { createCpuBackend } from "../backend/cpu/index.ts";
import { optimizerOnDevice, optimizerOnHost, type OptimizerPlacement } from "./offload.ts";
import { createLayerSharder } from "./sharded-layers.ts";
import { dpoObjective } from "./dpo/setup.ts";
import { hubPusher } from "./push.ts";
import { openRunLog } from "./run-log.ts";
import { preparePreferenceSplits } from "../data/preference.ts";
import { machineGroup, worldGroup } from "../dist/gather-group.ts";
import { agreeOnEveryRank } from "../dist/agree.ts";
import { formatMemorySize } from "../util/memory-size.ts";
import type { ShardedLoad } from "../model/causal-lm/frozen-shares.ts";
import { processPlace, type ProcessPlace } from "../dist/launch-env.ts";
import { checkpointName, resolveResumePath, rotateCheckpoints, saveCheckpointAtomically, saveCheckpointTogether, writeJson } from "./checkpoint.ts";
import { createProgressDisplay, type ProgressStream } from "./logging/progress.ts";
import { setUpTrainModel } from "./model-setup.ts";
import { initDoraMagnitudes } from "../model/causal-lm/dora.ts";
import { checkOutputDir, clearPreviousRun, lockOutputDir, refuseModelFolder } from "./output-dir.ts";
import { watchInterrupts } from "./interrupt.ts";
import { saveModelFiles } from "./save-model.ts";
import { isShardedSnapshot, readResumeState, writeOptimizerShard, writeTrainerFiles } from "./state-files.ts";
import { evaluate, train, type LogEntry, type TrainerSettings, type TrainerSnapshot } from "./trainer.ts";

/** What is trained: the SFT loss on tokens (tuna train), or DPO on preference pairs (tuna dpo). */
export type Objective = "sft" | "dpo";

export interface RecipeIO {
  out(text: string): void;
  err(text: string): void;
  /** Where the progress display draws (stderr of the process). */
  progress: ProgressStream;
}

export interface RecipeResult {
  outputDir: string;
  globalStep: number;
  trainLoss: number;
  evalLoss: number | undefined;
  logHistory: LogEntry[];
  /** Set when a signal stopped the run: it saved checkpoint-<globalStep> and no final adapter. */
  interrupted?: { signal: NodeJS.Signals; checkpoint: string };
}

export function trainerSettings(c: TrainConfig, padTokenId: number): TrainerSettings {
  return {
    seed: c.seed,
    numTrainEpochs: c.num_train_epochs,
    maxSteps: c.max_steps,
    trainBatchSize: c.per_device_train_batch_size,
    evalBatchSize: c.per_device_eval_batch_size,
    gradientAccumulationSteps: c.gradient_accumulation_steps,
    learningRate: c.learning_rate,
    schedule: { type: c.lr_scheduler_type, warmupSteps: c.warmup_steps, warmupRatio: c.warmup_ratio },
    adamw: { beta1: c.adam_beta1, beta2: c.adam_beta2, eps: c.adam_epsilon, weightDecay: c.weight_decay },
    maxGradNorm: c.max_grad_norm,
    // Packing is padding-free (TRL's default with bfd); unpacked sequences are padded per batch.
    padded: !c.packing,
    sampling: c.group_by_length ? "group_by_length" : c.train_sampling_strategy,
    dataSeed: c.data_seed,
    dropLast: c.dataloader_drop_last,
    logging: { strategy: c.logging_strategy, steps: c.logging_steps, firstStep: c.logging_first_step },
    eval: { strategy: c.eval_strategy, steps: c.eval_steps ?? c.logging_steps },
    save: { strategy: c.save_strategy, steps: c.save_steps },
    neftuneNoiseAlpha: c.neftune_noise_alpha,
    nanInfPolicy: c.nan_inf_policy,
    padTokenId,
  };
}

function describeSplit(p: Pick<PreparedSplit, "split" | "stats"> & { fromCache?: boolean }, objective: Objective): string {
  const s = p.stats;
  const eff = Number.isFinite(s.packingEfficiency) ? `, packing efficiency ${(100 * s.packingEfficiency).toFixed(1)}%` : "";
  if (objective === "dpo") return `${p.split}: ${s.rows} rows -> ${s.sequences} preference pairs, ${s.tokens} tokens (${s.trainedTokens} in completions), ${s.truncated} truncated, ${s.dropped} dropped`;
  return `${p.split}: ${s.rows} rows -> ${s.sequences} sequences, ${s.tokens} tokens (${s.trainedTokens} trained), ${s.truncated} truncated, ${s.dropped} dropped${eff}${p.fromCache === true ? " [cached]" : ""}`;
}

/** Tokenizer and chat format, the prepared data, and the model set up for training; the weight files closed after. */
async function modelAndData(backend: Backend, c: TrainConfig, modelDir: string, io: RecipeIO, collective: Collective | undefined, objective: Objective, shard?: ShardedLoad) {
  const folder = await openModelFolder(modelDir);
  try {
    const chat = setupChatFormat(await loadTokenizer(modelDir), c.chat_template_format, folder.config.vocabSize, c.chat_template_file, specialTokenOverrides(c));

    // Data: tokenized, masked and packed; cached under the output folder. Rank 0 prepares it first, the
    // other ranks then read its cache instead of writing the same files at once.
    const follower = collective !== undefined && collective.rank !== 0;
    if (follower) await collective.barrier();
    const splits =
      objective === "dpo"
        ? await preparePreferenceSplits(
            {
              datasetName: c.dataset_name,
              splits: c.splits,
              testSplitRatio: c.test_split_ratio,
              seed: c.seed,
              tokenizer: chat.tokenizer,
              template: chat.template ?? chat.tokenizer.chatTemplate,
              pairs: { maxPromptLength: c.max_prompt_length ?? null, maxCompletionLength: c.max_completion_length ?? null, maxLength: c.max_seq_length, truncationMode: c.truncation_mode, dropLong: c.drop_long_examples, skipBad: c.skip_bad_rows },
            },
            (m) => {
              io.err(m);
            },
          )
        : await prepareDatasets({
            ...trainPrepareOptions(c, { dir: modelDir, vocabSize: folder.config.vocabSize, modelType: folder.config.modelType }),
            onNotice: (m) => {
              io.err(m);
            },
          });
    if (collective !== undefined && !follower) await collective.barrier();
    const trainSplit = [...splits.values()].find((s) => s.split.includes("train"));
    if (trainSplit === undefined) throw new TunaError("CONFIG_INVALID", `no split containing "train" among ${[...splits.keys()].join(", ")}.`);
    const evalSplit = [...splits.values()].find((s) => s.split.includes("test"));
    for (const s of splits.values()) io.err(describeSplit(s, objective));
    if (folder.weightCheck.unexpected.length > 0) {
      const names = folder.weightCheck.unexpected;
      io.err(`warning: ${names.length} tensor(s) in ${modelDir} are not used by a ${folder.config.modelType} model and are ignored (e.g. ${names.slice(0, 3).join(", ")}).`);
    }

    // Every rank must load the same model (a machine with another download or quantization would mix in silently).
    if (collective !== undefined) {
      const layout = folder.weights.names().map((n) => `${n}:${folder.weights.info(n).dtype}:${folder.weights.info(n).shape.join("x")}`);
      await agreeOnEveryRank(collective, "model (config.json or tensor names, dtypes and shapes)", JSON.stringify([folder.config, layout]), `Give every machine the same files for ${c.model_name_or_path}.`);
    }
    // Model: resized vocabulary, quantized base, LoRA (or full fine-tuning).
    // ZeRO-3: each rank reads only its shares of the layers' frozen tensors, so no whole copy of the base exists.
    const setup = await setUpTrainModel(backend, folder.config, folder.weights, c, { newTokenIds: chat.newTokenIds, vocabSize: chat.resizedVocabSize }, shard);
    return { chat, trainSplit, evalSplit, setup };
  } finally {
    await folder.weights.close();
  }
}

export async function runTraining(resolved: ResolvedTrainConfig, io: RecipeIO, objective: Objective = "sft"): Promise<RecipeResult> {
  const c = resolved.config;
  // A rank of a distributed job (tuna launch, torchrun, srun, mpirun) joins it first, so that a rank that
  // fails early stops the others at once instead of leaving them waiting for it.
  const place = processPlace();
  const launch = resolved.launch;
  if (launch !== undefined && launch.numProcesses > 1 && launch.numProcesses !== place.worldSize) {
    throw new TunaError(
      "CONFIG_INVALID",
      `${launch.source} asks for ${launch.numProcesses} processes, but this job has ${place.worldSize} (${place.source}). ` +
        "Start it with `tuna train --config_file ...` alone (tuna starts the processes), or make the numbers agree.",
    );
  }
  const { stage: sharding, parameters: shardOver } = shardingOf(launch);
  if (place.rank === 0 && place.worldSize > 1 && shardOver !== false && launch !== undefined) {
    const over = shardOver === "machine" ? `1/${place.localWorldSize} (the ranks of its machine share them; machines hold replicas)` : `1/${place.worldSize}`;
    io.err(
      c.use_peft_lora
        ? `note: ${describeLaunch(launch)}: each rank keeps ${over} of the frozen (4-bit) base layers and gathers each layer when it computes; ` +
            "optimizer state and gradients are sharded as ZeRO-2 over all ranks. Each rank reads only its share of the layers; embeddings and head stay whole."
        : `note: ${describeLaunch(launch)}: full fine-tuning shards the optimizer state and gradients (as ZeRO-2) but not yet the parameters.`,
    );
  }
  const job = place.worldSize > 1 ? await joinThisJob(place, c) : undefined;
  const lead = place.rank === 0;
  let finished = false;
  try {
    const rankIo = lead ? io : quietIo();
    const outputDir = lead ? await checkOutputDir(c) : resolve(c.output_dir);
    // Model folder and tokenizer, with the chat format's special tokens.
    const modelDir = await resolveModelPath(c.model_name_or_path, { ...(c.model_revision === undefined ? {} : { revision: c.model_revision }), onNotice: (m) => { rankIo.err(m); } });
    refuseModelFolder(outputDir, modelDir);
    // Rank 0 owns the output folder: the lock, the clean-up, logs and saved files.
    const lock = lead ? await lockOutputDir(outputDir) : undefined;
    try {
      if (lead) {
        for (const removed of await clearPreviousRun(outputDir, c.overwrite_output_dir && c.resume_from_checkpoint === undefined)) {
          io.err(`removed ${join(outputDir, removed)} (left by an earlier run)`);
        }
      }
      const result = await trainLocked(resolved, rankIo, outputDir, modelDir, job === undefined ? undefined : { job, place, sharding, shardParameters: c.use_peft_lora ? shardOver : false }, objective);
      finished = true;
      return result;
    } finally {
      lock?.release();
    }
  } finally {
    // The normal end waits for every rank (rank 0's store must outlive the others' last queries).
    await (finished ? job?.leave() : job?.close());
  }
}

/** This process's place in the job; every rank must run the same tuna and configuration. */
function joinThisJob(place: ProcessPlace, c: TrainConfig): Promise<JobMembership> {
  const config = createHash("sha256").update(JSON.stringify(c)).digest("hex").slice(0, 16);
  return joinJob(place, { timeoutMs: c.ddp_timeout * 1000, identity: { tuna: TUNA_VERSION, configuration: config } });
}

/** What ranks other than 0 print: nothing (their errors still end the process with a message). */
function quietIo(): RecipeIO {
  return { out: () => undefined, err: () => undefined, progress: { write: () => true, isTTY: false } };
}

async function trainLocked(
  resolved: ResolvedTrainConfig,
  io: RecipeIO,
  outputDir: string,
  modelDir: string,
  member: { job: JobMembership; place: ProcessPlace; sharding: ShardingStage; shardParameters: false | "all" | "machine" } | undefined,
  objective: Objective,
): Promise<RecipeResult> {
  const c = resolved.config;
  // In a job each rank takes the GPU of its local rank; NCCL carries the training collectives on GPUs.
  const backend = createBackend(
    c.device,
    (m) => {
      io.err(m);
    },
    { index: member?.place.localRank ?? 0, shareGpus: requestedTransport() === "host" },
  );
  io.err(`device: ${backend.name}`);
  const collective = member === undefined ? undefined : await collectiveForBackend(member.job, member.place, backend, c.ddp_timeout * 1000);
  const optimizer = optimizerPlacement(resolved.launch, backend, io);
  const lockstep = member !== undefined && member.shardParameters !== false;
  const job = collective === undefined || member === undefined ? { optimizer } : { collective, sharding: member.sharding, optimizer, bucketCapMb: c.ddp_bucket_cap_mb, lockstep };
  // ZeRO-3 / FULL_SHARD over every rank, HYBRID_SHARD over this machine's ranks.
  const group = !lockstep || collective === undefined ? undefined : member.shardParameters === "machine" ? await machineGroup(collective, member.place) : worldGroup(collective);
  const sharder = group === undefined ? undefined : createLayerSharder(backend, group);
  const { chat, trainSplit, evalSplit, setup } = await modelAndData(backend, c, modelDir, io, member?.job.collective, objective, sharder?.load);
  // On the GPU a bf16 run keeps activations in bf16 as an HF bf16 model does; the CPU reference keeps f32.
  const activationDtype = backend.name === "cuda" && c.bf16 ? "bf16" : "f32";
  const model = createCausalLm(backend, setup.params, { checkpointing: c.gradient_checkpointing, seed: c.seed, activationDtype });
  io.out(setup.trainableLine);
  if (sharder !== undefined) {
    // The frozen base layers (sharded while loading) gathered per layer over the group's ranks.
    const sharded = sharder.residency(setup.params.layers);
    model.residency = sharded;
    io.err(`ZeRO-3: this rank keeps ${formatMemorySize(sharded.bytesHeld)} of the ${formatMemorySize(sharded.bytesWhole)} of frozen layer weights.`);
  }
  // DoRA's magnitudes start as the base weights' row norms (every rank of a sharded job gathers the layers together).
  if (setup.lora?.useDora === true) await initDoraMagnitudes(backend, setup.params, model.linearScratch, model.residency);

  // DPO batches are padding-free: a pair's two documents side by side, never attending to each other.
  const settings = { ...trainerSettings(c, chat.tokenizer.padTokenId ?? chat.tokenizer.eosTokenId ?? 0), ...(objective === "dpo" ? { padded: false } : {}) };
  const saveModel = (dir: string): Promise<void> => saveModelFiles(dir, { model, setup, modelDir, tokenizer: chat.tokenizer, config: c });
  const meta = { numTrainEpochs: c.num_train_epochs, loggingSteps: c.logging_steps, evalSteps: settings.eval.steps, saveSteps: c.save_steps, trainBatchSize: c.per_device_train_batch_size };

  // Resume: parameters, moments, RNG states and the data position of a checkpoint.
  let resume;
  if (c.resume_from_checkpoint !== undefined) {
    const dir = await resolveResumePath(c.resume_from_checkpoint, outputDir);
    resume = await readResumeState(dir, model.params.trainable);
    io.err(`resuming from ${dir} (step ${resume.globalStep})`);
  }

  const trainData = { train: trainSplit.sequences, ...(c.eval_strategy !== "no" && evalSplit !== undefined ? { eval: evalSplit.sequences } : {}) };
  // What the trainer trains: the model's token loss, or DPO over it.
  const trainingModel =
    objective === "dpo"
      ? await dpoObjective(asTrainingModel(model), c, trainData, {
          fullFineTuning: !c.use_peft_lora,
          outputDir,
          resuming: resume !== undefined,
          lead: collective === undefined || collective.rank === 0,
          padTokenId: settings.padTokenId,
          onNote: (m) => {
            io.err(`note: ${m}`);
          },
        })
      : asTrainingModel(model);

  // What each rank writes into a checkpoint of a job: its optimizer shard under ZeRO, nothing otherwise.
  const rankPart = (snap: TrainerSnapshot) => (dir: string): Promise<void> => (isShardedSnapshot(snap) ? writeOptimizerShard(dir, model.params.trainable, snap) : Promise.resolve());
  if (collective !== undefined && collective.rank !== 0) {
    // Every rank holds the same parameters after each step; rank 0 logs and saves them.
    // Under ZeRO each rank writes its own optimizer shard into the checkpoint rank 0 assembles.
    const saveCheckpoint = async (step: number, snap: TrainerSnapshot): Promise<void> => {
      await saveCheckpointTogether(outputDir, step, collective, { everyRank: rankPart(snap) });
    };
    // Ctrl-C reaches every rank through the terminal's process group; rank 0 says so, the ranks stop together.
    const interrupts = watchInterrupts(() => undefined);
    const result = await train(trainingModel, trainData, settings, { onLog: () => undefined, saveCheckpoint, stopRequested: () => interrupts.signal() !== undefined, ...job }, resume).finally(() => {
      interrupts.dispose();
    });
    const signal = interrupts.signal();
    const interrupted = result.interrupted ? { signal: signal ?? "SIGINT", checkpoint: join(outputDir, checkpointName(result.globalStep)) } : undefined;
    return { outputDir, globalStep: result.globalStep, trainLoss: result.trainLoss, evalLoss: undefined, logHistory: result.logHistory, ...(interrupted === undefined ? {} : { interrupted }) };
  }

  const runLog = openRunLog(c, outputDir, resume?.globalStep, (m) => {
    io.err(m);
  });
  const hub = hubPusher(c, outputDir, (m) => {
    io.err(m);
  });
  let progress: ReturnType<typeof createProgressDisplay> | undefined;
  const interrupts = watchInterrupts((text) => {
    io.err(text);
  });
  const result = await train(
    trainingModel,
    trainData,
    settings,
    {
      onLog: (entry) => {
        runLog.add(entry);
        if (progress !== undefined) progress.log(entry);
        else io.err(JSON.stringify(entry));
      },
      onProgress: (p) => {
        progress ??= createProgressDisplay(io.progress, { totalSteps: p.maxSteps });
        progress.update({ step: p.step, loss: p.loss, learningRate: p.lr, gradNorm: p.gradNorm, tokensPerSecond: p.tokensPerSecond });
      },
      saveCheckpoint: async (step, snap) => {
        const lead = async (dir: string): Promise<void> => {
          await saveModel(dir);
          await writeJson(join(dir, "training_args.json"), c);
          await writeTrainerFiles(dir, backend, model.params.trainable, snap, { ...meta, zeroStage: job.sharding ?? 0 });
        };
        if (collective === undefined) await saveCheckpointAtomically(outputDir, step, lead);
        else await saveCheckpointTogether(outputDir, step, collective, { everyRank: rankPart(snap), lead });
        for (const removed of await rotateCheckpoints(outputDir, c.save_total_limit)) io.err(`removed ${removed} (save_total_limit ${c.save_total_limit})`);
        await hub?.checkpoint(step);
      },
      // Ctrl-C in a distributed job reaches every rank (and the launcher); one process stops by itself.
      stopRequested: () => interrupts.signal() !== undefined,
      ...job,
    },
    resume,
  )
    .catch((e: unknown) => {
      runLog.stopped("FAILED");
      throw e;
    })
    .finally(() => {
      interrupts.dispose();
    });
  progress?.finish();
  const signal = result.interrupted ? (interrupts.signal() ?? "SIGINT") : undefined;
  if (signal !== undefined) {
    runLog.stopped("KILLED");
    const checkpoint = join(outputDir, checkpointName(result.globalStep));
    return { outputDir, globalStep: result.globalStep, trainLoss: result.trainLoss, evalLoss: undefined, logHistory: result.logHistory, interrupted: { signal, checkpoint } };
  }

  // The final adapter (or model) and tokenizer go to output_dir itself, as Trainer.save_model does.
  await saveModel(outputDir);
  let evalLoss: number | undefined;
  if (evalSplit !== undefined && c.eval_strategy !== "no") {
    // (With sharded layers rank 0 cannot evaluate alone; the trainer's last evaluation is there then.)
    evalLoss = result.logHistory.filter((e) => "eval_loss" in e).at(-1)?.["eval_loss"] ?? (lockstep ? undefined : (await evaluate(trainingModel, evalSplit.sequences, settings)).loss);
  }
  const written = await runLog.finished({ objective, world: collective?.worldSize ?? 1, history: result.logHistory, globalStep: result.globalStep, trainLoss: result.trainLoss, evalLoss, runtimeMs: result.runtimeMs, tokensSeen: result.tokensSeen });
  io.err(`saved to ${outputDir} (${written})`);
  await hub?.end();
  return { outputDir, globalStep: result.globalStep, trainLoss: result.trainLoss, evalLoss, logHistory: result.logHistory };
}


/**
 * Where AdamW runs: the accelerate file's optimizer offload (DeepSpeed offload_optimizer_device, FSDP CPU
 * offload) keeps the moments in host memory and runs the update on the CPU; the rest is said, not ignored.
 */
function optimizerPlacement(launch: LaunchConfig | undefined, backend: Backend, io: RecipeIO): OptimizerPlacement {
  const s = launch?.sharding;
  if (s === undefined || (s.kind !== "zero" && s.kind !== "fsdp")) return optimizerOnDevice(backend);
  if (s.kind === "zero" && (s.offloadOptimizerDevice === "nvme" || s.offloadParamDevice === "nvme")) {
    io.err("note: offload to nvme is not implemented; tuna offloads the optimizer to CPU memory instead.");
  }
  if (s.offloadParams) {
    io.err("note: parameter offload: the parameters stay on the device (beyond ZeRO-3's sharding of the frozen layers, tuna does not offload them yet); the optimizer state is offloaded to CPU memory.");
  }
  if (!s.offloadOptimizer && !s.offloadParams) return optimizerOnDevice(backend);
  if (backend.name === "cpu") return optimizerOnDevice(backend); // already in host memory
  io.err("optimizer offload: AdamW moments in CPU memory, the update on the CPU each step.");
  return optimizerOnHost(backend, createCpuBackend());
}
