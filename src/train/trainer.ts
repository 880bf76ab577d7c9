// The training loop with HF Trainer semantics: gradient accumulation whose loss is the mean over all
// trained tokens of the accumulated micro-batches, clipping, AdamW, lr schedule, log/eval/save cadence,
// checkpoints, and exact resume (params, moments, RNG states and the position in the data order).
import type { Backend } from "../backend/types.ts";
import { sumOverRanks, type Collective } from "../dist/collective.ts";
import { makeBatches, toModelBatch, type BatchPlan, type SamplingStrategy } from "../data/batches.ts";
import { batchFromDocuments, type Batch } from "../data/batch.ts";
import type { PackedSequence } from "../data/types.ts";
import type { TrainingModel } from "../model/types.ts";
import { TunaError } from "../util/errors.ts";
import { createRng, rngAt, type Rng } from "../util/random.ts";
import type { AdamWSettings, OptimizerState } from "./optimizer.ts";
import { optimizerOnDevice, type OptimizerPlacement } from "./offload.ts";
import { createDataParallel, type LocalMoments, type ShardingStage } from "./data-parallel.ts";
import { learningRate, resolveWarmupSteps, type ScheduleOptions } from "./schedule.ts";

export type Strategy = "no" | "steps" | "epoch";

export interface TrainerSettings {
  seed: number;
  numTrainEpochs: number;
  maxSteps: number; // <= 0: from epochs
  trainBatchSize: number;
  evalBatchSize: number;
  gradientAccumulationSteps: number;
  learningRate: number;
  schedule: Omit<ScheduleOptions, "totalSteps" | "baseLr" | "warmupSteps"> & { warmupSteps: number; warmupRatio: number };
  adamw: AdamWSettings;
  maxGradNorm: number;
  padded: boolean;
  /** The training order (transformers' train_sampling_strategy; data/batches.ts says how each is drawn). */
  sampling: SamplingStrategy;
  /** args.data_seed: the random sampler's seed when set, else `seed`. */
  dataSeed: number | undefined;
  /** dataloader_drop_last: an epoch's last, smaller micro-batch is not trained. */
  dropLast: boolean;
  logging: { strategy: Strategy; steps: number; firstStep: boolean };
  eval: { strategy: Strategy; steps: number };
  save: { strategy: Strategy; steps: number };
  neftuneNoiseAlpha: number | undefined;
  nanInfPolicy: "stop" | "skip";
  padTokenId: number;
}

export interface LogEntry {
  step: number;
  epoch: number;
  [key: string]: number;
}

/** What the trainer reports and asks the outside world to do; the recipe wires files and consoles. */
export interface TrainerHooks {
  onLog(entry: LogEntry): void;
  onProgress?(p: { step: number; maxSteps: number; loss: number; lr: number; gradNorm: number; tokensPerSecond: number; elapsedMs: number }): void;
  /** Writes model files, optimizer and trainer state into `dir` (a temporary folder the caller renames). */
  saveCheckpoint(step: number, state: TrainerSnapshot): Promise<void>;
  /**
   * Asked after every optimizer step (the event loop having run, so signal handlers had their turn): true
   * ends the run there, after a checkpoint of that step (Ctrl-C).
   */
  stopRequested?(): boolean;
  /**
   * Data parallelism: this process is one rank of `collective`. Each optimizer step takes
   * gradient_accumulation_steps x world size micro-batches in the sampler's order; rank r takes those at
   * positions r, r + W, r + 2W... (accelerate's sharding). The loss is normalised by the trained tokens of
   * all ranks, gradients are summed across ranks before clipping, so every rank takes the same step.
   */
  collective?: Collective;
  /** With a collective: 0 = DDP, 1 = ZeRO-1 (optimizer state sharded), 2 = ZeRO-2 (gradients too). */
  sharding?: ShardingStage;
  /**
   * Sharded parameters (ZeRO-3): every forward gathers layers over the ranks, so every rank runs as many
   * forwards and backwards as the busiest one; a rank with fewer micro-batches runs empty ones (no token trained).
   */
  lockstep?: boolean;
  /** Gradient bucket size for the data-parallel all-reduce (ddp_bucket_cap_mb; torch DDP's 25 by default). */
  bucketCapMb?: number;
  /** Where AdamW runs and keeps its moments: the device (default) or host memory (offload_optimizer_device). */
  optimizer?: OptimizerPlacement;
}

/** Everything needed to continue exactly where a run stopped. */
export interface TrainerSnapshot {
  globalStep: number;
  epoch: number;
  maxSteps: number;
  logHistory: LogEntry[];
  optimizer: OptimizerState;
  /** This rank's AdamW moments: its shard under ZeRO (each rank writes its own), else the whole buffer. */
  moments: LocalMoments;
  /** The job's shape when the snapshot was taken (a checkpoint's manifest records it). */
  worldSize: number;
  rank: number;
  dropoutRng: [number, number, number, number];
  neftuneRng: [number, number, number, number];
  /** Sum of the per-step losses since the start (HF's _total_loss_scalar), for train_loss. */
  totalLoss: number;
}

export interface ResumeState {
  globalStep: number;
  logHistory: LogEntry[];
  m: Float32Array;
  v: Float32Array;
  optimizerStep: number;
  params: Float32Array;
  dropoutRng: [number, number, number, number];
  neftuneRng: [number, number, number, number];
  totalLoss: number;
}

export interface TrainResult {
  globalStep: number;
  trainLoss: number;
  logHistory: LogEntry[];
  runtimeMs: number;
  tokensSeen: number;
  /** Set when stopRequested ended the run early; a checkpoint of globalStep was saved. */
  interrupted: boolean;
}

/** HF: update steps per epoch = ceil(micro-batches / GA), at least 1. */
export function stepsPerEpoch(microBatches: number, ga: number): number {
  return Math.max(Math.ceil(microBatches / ga), 1);
}

/** Optimizer steps of the run; `worldSize` ranks share each step's micro-batches. */
export function totalSteps(s: TrainerSettings, microBatchesPerEpoch: number, worldSize = 1): number {
  return s.maxSteps > 0 ? s.maxSteps : Math.ceil(s.numTrainEpochs * stepsPerEpoch(microBatchesPerEpoch, s.gradientAccumulationSteps * worldSize));
}

function epochPlans(s: TrainerSettings, sequences: readonly PackedSequence[], epoch: number): BatchPlan[] {
  return makeBatches(sequences, {
    batchSize: s.trainBatchSize,
    padded: s.padded,
    sampling: s.sampling,
    seed: s.seed,
    ...(s.dataSeed === undefined ? {} : { dataSeed: s.dataSeed }),
    epoch,
    gradientAccumulationSteps: s.gradientAccumulationSteps,
    dropLast: s.dropLast,
  });
}

/** Mean loss over all trained tokens of a split, without keeping logits beyond one batch. */
export async function evaluate(model: TrainingModel, sequences: readonly PackedSequence[], s: TrainerSettings, collective?: Collective, lockstep = false): Promise<{ loss: number; tokens: number }> {
  const plans = makeBatches(sequences, { batchSize: s.evalBatchSize, padded: s.padded, sampling: "sequential", seed: s.seed, epoch: 0 });
  // In a job every rank evaluates its share of the batches (k % W == rank, as the training sampler) and the
  // sums are combined exactly, so the loss is the one process's.
  const world = collective?.worldSize ?? 1;
  const rank = collective?.rank ?? 0;
  let lossSum = 0;
  let tokens = 0;
  for (const [k, plan] of plans.entries()) {
    if (k % world !== rank) continue;
    const batch = model.upload(toModelBatch(plan, sequences, s.padTokenId));
    const r = await model.forward(batch);
    lossSum += r.lossSum;
    tokens += r.tokens;
    model.free(batch);
  }
  if (lockstep && world > 1) {
    // As many forwards as the rank with the most batches (ranks gather layers together).
    const most = Math.ceil(plans.length / world);
    const mine = plans.filter((_, k) => k % world === rank).length;
    for (let i = mine; i < most; i++) {
      const empty = model.upload(emptyBatch(s.padTokenId));
      await model.forward(empty);
      model.free(empty);
    }
  }
  if (collective !== undefined && world > 1) [lossSum, tokens] = (await sumOverRanks(collective, [lossSum, tokens])) as [number, number];
  return { loss: tokens === 0 ? NaN : lossSum / tokens, tokens };
}

export async function train(
  model: TrainingModel,
  data: { train: readonly PackedSequence[]; eval?: readonly PackedSequence[] },
  s: TrainerSettings,
  hooks: TrainerHooks,
  resume?: ResumeState,
): Promise<TrainResult> {
  const be: Backend = model.backend;
  const trainable = model.trainable;
  if (trainable.total === 0) throw new TunaError("CONFIG_INVALID", "nothing to train: the model has no trainable parameters.");
  const firstPlans = epochPlans(s, data.train, 0);
  if (firstPlans.length === 0) throw new TunaError("CONFIG_INVALID", "the training split produced no batches.");
  const collective = hooks.collective;
  const world = collective?.worldSize ?? 1;
  const rank = collective?.rank ?? 0;
  // Micro-batches per optimizer step over all ranks.
  const perStep = s.gradientAccumulationSteps * world;
  const perEpoch = stepsPerEpoch(firstPlans.length, perStep);
  const maxSteps = totalSteps(s, firstPlans.length, world);
  const schedule: ScheduleOptions = {
    ...s.schedule,
    baseLr: s.learningRate,
    totalSteps: maxSteps,
    warmupSteps: resolveWarmupSteps(s.schedule.warmupSteps, s.schedule.warmupRatio, maxSteps),
  };
  // HF: *_steps below 1 are a ratio of the total steps.
  const every = (n: number): number => Math.max(1, n < 1 ? Math.ceil(n * maxSteps) : Math.round(n));
  const logEvery = every(s.logging.steps);
  const evalEvery = every(s.eval.steps);
  const saveEvery = every(s.save.steps);
  const parallel = createDataParallel(be, trainable, collective, hooks.sharding ?? 0, hooks.bucketCapMb);
  const placement = hooks.optimizer ?? optimizerOnDevice(be);
  const optimizer = placement.createState(trainable, parallel.range);
  let neftuneRng: Rng = createRng(s.seed + 7919);
  let globalStep = 0;
  let totalLoss = 0;
  const logHistory: LogEntry[] = [];
  if (resume !== undefined) {
    be.upload(trainable.params, resume.params);
    // Resume hands every rank the whole buffer's moments (assembled from any number of shards): each takes
    // its own range, so any world size resumes any checkpoint.
    const { lo, hi } = parallel.range;
    placement.backend.upload(optimizer.m, resume.m.subarray(Math.min(lo, resume.m.length), Math.min(hi, resume.m.length)));
    placement.backend.upload(optimizer.v, resume.v.subarray(Math.min(lo, resume.v.length), Math.min(hi, resume.v.length)));
    optimizer.step = resume.optimizerStep;
    // (The checkpoint's RNG states are not restored: every micro-batch draws from its place in the data.)
    globalStep = resume.globalStep;
    totalLoss = resume.totalLoss;
    logHistory.push(...resume.logHistory);
  }
  be.fill(trainable.grads, 0);

  const started = performance.now();
  let windowLoss = 0; // sum of step losses since the last log
  let windowSteps = 0;
  let windowGradNorm = 0;
  // Tokens and wall time of the optimizer steps since the last log (evaluation and saving excluded): tokens_per_second.
  let windowTokens = 0;
  let windowMs = 0;
  let tokensSeen = 0;
  let lastLr = 0;
  // Every rank takes part: each holds its own moments; the hooks decide who writes what.
  const snapshot = async (epoch: number): Promise<TrainerSnapshot> => ({
    globalStep,
    epoch,
    maxSteps,
    logHistory,
    optimizer,
    moments: await parallel.localMoments(optimizer, placement.backend),
    worldSize: world,
    rank,
    dropoutRng: model.dropoutRng.state(),
    neftuneRng: neftuneRng.state(),
    totalLoss,
  });
  // The objective's metrics (DPO's rewards...), means over every rank's pairs since the last log.
  const objectiveMetrics = async (kind: "train" | "eval", prefix: string): Promise<Record<string, number>> => {
    const taken = model.takeMetrics?.(kind);
    if (taken === undefined) return {};
    const keys = Object.keys(taken).sort();
    let values = keys.flatMap((k) => [taken[k]!.sum, taken[k]!.count]);
    if (collective !== undefined && world > 1) values = await sumOverRanks(collective, values);
    const out: Record<string, number> = {};
    keys.forEach((k, i) => {
      if (values[2 * i + 1]! > 0) out[`${prefix}${k}`] = values[2 * i]! / values[2 * i + 1]!;
    });
    return out;
  };
  const log = async (epoch: number): Promise<void> => {
    if (windowSteps === 0) return;
    const entry: LogEntry = { step: globalStep, epoch: round(epoch, 4), loss: windowLoss / windowSteps, grad_norm: windowGradNorm, learning_rate: lastLr };
    if (windowMs > 0) entry.tokens_per_second = round(windowTokens / (windowMs / 1000), 1);
    const memory = model.backend.memoryStats?.();
    if (collective !== undefined && world > 1) {
      // Every rank's peak (the device's when the backend counts it, else the process's peak RSS): the job's
      // figure is the largest, and each rank's is logged too.
      const own = memory?.peakInUseBytes ?? process.resourceUsage().maxRSS * 1024;
      const peaks = await collective.allGather(Float32Array.of(own / 2 ** 30));
      entry.peak_memory_gib = round(Math.max(...peaks), 3);
      peaks.forEach((p, r) => (entry[`peak_memory_gib_rank_${r}`] = round(p, 3)));
    } else if (memory !== undefined) {
      entry.peak_memory_gib = round(memory.peakInUseBytes / 2 ** 30, 3);
    }
    Object.assign(entry, await objectiveMetrics("train", ""));
    logHistory.push(entry);
    hooks.onLog(entry);
    windowLoss = 0;
    windowSteps = 0;
    windowTokens = 0;
    windowMs = 0;
  };
  const runEval = async (epoch: number): Promise<void> => {
    // Every rank evaluates its share (all hold the same parameters); only rank 0's hooks log.
    if (data.eval === undefined || data.eval.length === 0) return;
    const r = await evaluate(model, data.eval, s, collective, hooks.lockstep === true);
    // A loss over tokens has a perplexity; a loss over other units (DPO's pairs) does not.
    const perToken = model.lossUnits === undefined;
    const entry: LogEntry = { step: globalStep, epoch: round(epoch, 4), eval_loss: r.loss, ...(perToken ? { eval_perplexity: Math.exp(r.loss), eval_tokens: r.tokens } : {}), ...(await objectiveMetrics("eval", "eval_")) };
    logHistory.push(entry);
    hooks.onLog(entry);
  };

  let epoch = Math.floor(globalStep / perEpoch);
  let skipSteps = globalStep % perEpoch;
  while (globalStep < maxSteps) {
    const stepAtEpochStart = globalStep;
    const plans = epoch === 0 ? firstPlans : epochPlans(s, data.train, epoch);
    const groups: BatchPlan[][] = [];
    for (let i = 0; i < plans.length; i += perStep) groups.push(plans.slice(i, i + perStep));
    for (let g = skipSteps; g < groups.length && globalStep < maxSteps; g++) {
      const stepStarted = performance.now();
      const group = groups[g]!;
      const mine = group.filter((_, k) => k % world === rank);
      const batches = mine.map((plan) => toModelBatch(plan, data.train, s.padTokenId));
      // num_items_in_batch: trained targets over ALL micro-batches of this optimizer step, on every rank.
      let numItems = 0;
      for (const b of batches) {
        if (model.lossUnits !== undefined) numItems += model.lossUnits(b);
        else for (const t of b.targets) if (t !== -100) numItems++;
      }
      if (collective !== undefined) {
        const count = Float32Array.of(numItems);
        await collective.allReduceSum(count);
        numItems = count[0]!;
      }
      let lossSum = 0;
      let stepTokens = 0;
      // Gradients are reduced bucket by bucket as the step's last backward finishes each layer (the same
      // buckets in the same order on every rank, also on a rank without a micro-batch this step).
      const buckets = parallel.startBuckets(trainable.grads);
      if (numItems > 0) {
        for (const [i, b] of batches.entries()) {
          // Dropout masks and NEFTune noise follow the micro-batch's place in the data (epoch, step, position
          // in the step), not how many micro-batches this process ran before: every world size, and a resumed
          // run, draws the same ones as one uninterrupted process.
          const k = rank + i * world;
          model.dropoutRng = rngAt(s.seed, DROPOUT_STREAM, epoch, g, k);
          neftuneRng = rngAt(s.seed, NEFTUNE_STREAM, epoch, g, k);
          const device = model.upload(b);
          const r = await model.forward(device, {
            training: true,
            ...(s.neftuneNoiseAlpha === undefined ? {} : { neftune: { alpha: s.neftuneNoiseAlpha, rng: neftuneRng } }),
          });
          lossSum += r.lossSum;
          await model.backward(device, 1 / numItems, i === batches.length - 1 ? buckets?.layerDone : undefined);
          model.free(device);
          stepTokens += b.ids.length;
        }
      }
      if (hooks.lockstep === true && world > 1 && numItems > 0) {
        // Empty micro-batches up to the busiest rank's count: the same layer gathers on every rank.
        for (let i = batches.length; i < Math.ceil(group.length / world); i++) {
          const empty = model.upload(emptyBatch(s.padTokenId));
          await model.forward(empty, { training: true });
          await model.backward(empty, 0);
          model.free(empty);
        }
      }
      await (buckets !== undefined ? buckets.finish() : parallel.reduceGradients(trainable.grads));
      let stopAgreed = false;
      if (collective !== undefined) {
        // Every rank ends the step with the same loss and token count, and learns whether any rank was asked
        // to stop (Ctrl-C reaches every rank; they must stop after the same step).
        const totals = await sumOverRanks(collective, [lossSum, stepTokens, hooks.stopRequested?.() === true ? 1 : 0]);
        [lossSum, stepTokens] = [totals[0]!, totals[1]!];
        stopAgreed = totals[2]! > 0;
      }
      tokensSeen += stepTokens;
      const stepLoss = numItems > 0 ? lossSum / numItems : 0;
      const gradNorm = await parallel.clip(trainable.grads, s.maxGradNorm);
      if (!Number.isFinite(stepLoss) || !Number.isFinite(gradNorm)) {
        const rows = [...new Set(group.flatMap((p) => p.sequenceIndices.flatMap((i) => data.train[i]!.rows)))].slice(0, 20);
        const what = `step ${globalStep + 1}: the loss is ${stepLoss} and the gradient norm ${gradNorm} (batch built from source rows ${rows.join(", ")})`;
        if (s.nanInfPolicy === "stop") {
          throw new TunaError("CONFIG_INVALID", `${what}. Lower learning_rate, check these rows, or set nan_inf_policy skip.`);
        }
        be.fill(trainable.grads, 0);
        hooks.onLog({ step: globalStep, epoch, skipped_nonfinite_step: globalStep + 1 });
        continue;
      }
      lastLr = learningRate(globalStep, schedule);
      await placement.step(trainable, optimizer, lastLr, s.adamw);
      await parallel.shareParameters(trainable.params);
      be.fill(trainable.grads, 0);
      globalStep++;
      totalLoss += stepLoss;
      windowLoss += stepLoss;
      windowSteps++;
      windowGradNorm = gradNorm;
      windowTokens += stepTokens;
      windowMs += performance.now() - stepStarted;
      const epochFloat = epoch + (g + 1) / groups.length;
      hooks.onProgress?.({
        step: globalStep,
        maxSteps,
        loss: stepLoss,
        lr: lastLr,
        gradNorm,
        tokensPerSecond: tokensSeen / ((performance.now() - started) / 1000),
        elapsedMs: performance.now() - started,
      });
      const last = globalStep >= maxSteps;
      if ((s.logging.strategy === "steps" && (globalStep % logEvery === 0 || last)) || (s.logging.firstStep && globalStep === 1)) await log(epochFloat);
      if (s.eval.strategy === "steps" && (globalStep % evalEvery === 0 || last)) await runEval(epochFloat);
      const saveNow = s.save.strategy === "steps" && (globalStep % saveEvery === 0 || last);
      if (saveNow) await hooks.saveCheckpoint(globalStep, await snapshot(epochFloat));
      if (hooks.stopRequested !== undefined) {
        // The CPU backend's ops never yield: without this, a Ctrl-C handler would wait for the end of training.
        // (A job's ranks decided together above, in the step's all-reduce.)
        if (collective === undefined) await new Promise((done) => setImmediate(done));
        if (collective === undefined ? hooks.stopRequested() : stopAgreed) {
          if (!saveNow) await hooks.saveCheckpoint(globalStep, await snapshot(epochFloat));
          await log(epochFloat);
          return { globalStep, trainLoss: totalLoss / globalStep, logHistory, runtimeMs: performance.now() - started, tokensSeen, interrupted: true };
        }
      }
    }
    if (globalStep === stepAtEpochStart && skipSteps === 0) {
      throw new TunaError("CONFIG_INVALID", `epoch ${epoch + 1} made no optimizer step: every step had a non-finite loss.`);
    }
    skipSteps = 0;
    epoch++;
    if (s.logging.strategy === "epoch") await log(epoch);
    if (s.eval.strategy === "epoch") await runEval(epoch);
    if (s.save.strategy === "epoch") await hooks.saveCheckpoint(globalStep, await snapshot(epoch));
  }
  await log(epoch);
  const runtimeMs = performance.now() - started;
  return { globalStep, trainLoss: globalStep === 0 ? NaN : totalLoss / globalStep, logHistory, runtimeMs, tokensSeen, interrupted: false };
}

/** One padding token, nothing trained: what a rank runs to keep in step with the others. */
function emptyBatch(padTokenId: number): Batch {
  return batchFromDocuments([{ inputIds: [padTokenId], labels: [-100] }]);
}

const DROPOUT_STREAM = 1;
const NEFTUNE_STREAM = 2;

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
