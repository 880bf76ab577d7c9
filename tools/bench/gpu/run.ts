// The benchmark core: one (model, mode) loaded through tuna's loader from synthetic weights, then per
// checkpointing setting the trainer's optimizer step timed (warm-up, median of N), its peak memory and a profiled step.
import { performance } from "node:perf_hooks";
import type { Backend, Tensor } from "../../../src/backend/types.ts";
import { initLoraWeights } from "../../../src/lora/init.ts";
import { makeLoraSettings } from "../../../src/lora/settings.ts";
import { batchFromRows, type Batch } from "../../../src/data/batch.ts";
import { parseModelConfig, type ModelConfig } from "../../../src/hf/config.ts";
import type { HfConfigJson } from "../../../src/hf/presets.ts";
import { PROJECTIONS } from "../../../src/hf/weights.ts";
import { loadCausalLmParams } from "../../../src/model/causal-lm/load.ts";
import { backward, createCausalLm, forward, freeBatch, freeCausalLm, uploadBatch, type CausalLm } from "../../../src/model/causal-lm/model.ts";
import type { CausalLmParams } from "../../../src/model/causal-lm/params.ts";
import { clipGradients, createOptimizerState, optimizerStep, type AdamWSettings, type OptimizerState } from "../../../src/train/optimizer.ts";
import { createDataParallel } from "../../../src/train/data-parallel.ts";
import type { Collective } from "../../../src/dist/collective.ts";
import { errorMessage } from "../../../src/util/errors.ts";
import { createRng } from "../../../src/util/random.ts";
import { GIB, type BenchDevice } from "./device.ts";
import { flopsPerToken, type BenchMode } from "./models.ts";
import { breakdownOf, profilingBackend, type Breakdown } from "./profile.ts";
import { breakdownLines, resultLine } from "./report.ts";
import { createSyntheticWeights, type SyntheticPools } from "./synthetic-weights.ts";

// The peer's settings: LoRA r=16 alpha=32 on all linear layers, no dropout; torch AdamW defaults at lr 1e-4; clip 1.0.
const LORA = { r: 16, alpha: 32, dropout: 0, targetModules: "all-linear" } as const;
const LR = 1e-4;
const ADAMW: AdamWSettings = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
const MAX_GRAD_NORM = 1.0;

export interface GroupOptions {
  /** Benchmark model name (for reports). */
  model: string;
  mode: BenchMode;
  configJson: HfConfigJson;
  /** Checkpointing settings to run, in order, over one loaded set of parameters. */
  gcs: readonly boolean[];
  seq: number;
  mbs: number;
  warmup: number;
  steps: number;
  profile: boolean;
  seed: number;
  /** LoRA dropout (the peer runs 0; the seed workflow 0.1). Default 0. */
  loraDropout?: number;
  /** Data parallel: this process is one rank; each step's gradients are all-reduced as the trainer does (DDP). */
  collective?: Collective;
}

export interface BenchMemoryGiB {
  peakInUse: number;
  peakReserved: number;
  /** In use right after loading: base weights, LoRA parameters and gradients. */
  afterLoadInUse: number;
}

export interface BenchResult {
  model: string;
  mode: BenchMode;
  gc: boolean;
  seq: number;
  mbs: number;
  device: string;
  warmup: number;
  steps: number;
  trainableParams: number;
  loadSeconds: number;
  /** Every measured step, ms, in order. */
  stepMs: number[];
  /** The middle of the sorted step times (the upper one for an even count, as hf_baseline.py). */
  medianStepMs: number;
  tokensPerSecond: number;
  /** With hf_baseline.py's FLOPs-per-token rule. */
  tflops: number;
  /** Mean token loss of the last measured step. */
  loss: number;
  memory: BenchMemoryGiB | null;
  breakdown: Breakdown | null;
  /** Ranks that took each step together (1 without --nproc). */
  worldSize: number;
  /** Share of the median step spent in the gradient all-reduce (data parallel), else null. */
  commShare: number | null;
  /** Set when the configuration failed; the numbers are then NaN. */
  error?: string;
}

/** mbs rows of seq random token ids, every label trained (labels = ids, shifted inside each row). */
export function randomBatch(vocabSize: number, seq: number, mbs: number, seed: number): Batch {
  const rng = createRng(seed + 1);
  const rows = Array.from({ length: mbs }, () => ({ inputIds: Array.from({ length: seq }, () => Math.floor(rng.uniform() * vocabSize)) }));
  return batchFromRows(rows);
}

/** One optimizer step as the trainer runs it with gradient accumulation 1; returns the mean token loss. */
export async function trainStep(model: CausalLm, batch: Batch, optimizer: OptimizerState, marks?: (phase: "forward" | "backward") => void, reduce?: () => Promise<void>): Promise<number> {
  const be = model.backend;
  const trainable = model.params.trainable;
  be.fill(trainable.grads, 0);
  const device = uploadBatch(model, batch);
  const r = await forward(model, device, { training: true });
  marks?.("forward");
  await backward(model, device, 1 / r.tokens);
  freeBatch(model, device);
  marks?.("backward");
  // Data parallel: every rank's batch has the same token count here, so the mean of the ranks' mean-loss
  // gradients is the sum scaled by 1 / W (the trainer normalises by the global token count instead).
  if (reduce !== undefined) await reduce();
  await clipGradients(be, trainable.grads, MAX_GRAD_NORM);
  optimizerStep(be, trainable, optimizer, LR, ADAMW);
  return r.lossSum / r.tokens;
}

/** Every tensor the loader allocated (views of the trainable buffers are freed with them). */
export function freeParams(be: Backend, params: CausalLmParams): void {
  const owned = new Set<Tensor>([params.embed, params.norm, params.lmHead, params.trainable.params, params.trainable.grads]);
  for (const t of [params.effectiveLmHead, params.lmHeadGradScratch]) if (t !== null) owned.add(t);
  for (const layer of params.layers) {
    owned.add(layer.inputNorm);
    owned.add(layer.postNorm);
    for (const p of PROJECTIONS) {
      const lin = layer.proj[p];
      for (const t of [lin.weight, lin.bias, lin.quant?.packed ?? null, lin.quant?.absmax ?? null, lin.quant?.code ?? null]) if (t !== null) owned.add(t);
    }
  }
  for (const t of owned) be.free(t);
}

function medianOf(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

async function profiledStep(device: BenchDevice, model: CausalLm, batch: Batch, optimizer: OptimizerState): Promise<Breakdown> {
  const timer = profilingBackend(device);
  const real = model.backend;
  model.backend = timer.backend;
  try {
    device.synchronize();
    const t0 = performance.now();
    let tForward = t0;
    let tBackward = t0;
    await trainStep(model, batch, optimizer, (phase) => {
      device.synchronize();
      if (phase === "forward") tForward = performance.now();
      else tBackward = performance.now();
    });
    device.synchronize();
    const t1 = performance.now();
    return breakdownOf(timer.totals(), t1 - t0, { forwardMs: tForward - t0, backwardMs: tBackward - tForward, optimizerMs: t1 - tBackward });
  } finally {
    model.backend = real;
  }
}

interface Loaded {
  cfg: ModelConfig;
  params: CausalLmParams;
  initial: Float32Array;
  loadSeconds: number;
  afterLoadInUse: number;
}

async function measure(device: BenchDevice, loaded: Loaded, gc: boolean, batch: Batch, o: GroupOptions): Promise<BenchResult> {
  const be = device.backend;
  const { cfg, params } = loaded;
  // Each checkpointing setting starts from the same adapter weights.
  be.upload(params.trainable.params, loaded.initial);
  const model = createCausalLm(be, params, { checkpointing: gc, seed: o.seed, activationDtype: "bf16" });
  const optimizer = createOptimizerState(be, params.trainable);
  const world = o.collective?.worldSize ?? 1;
  const parallel = o.collective === undefined ? undefined : createDataParallel(be, params.trainable, o.collective, 0);
  let commMs = 0;
  const reduce =
    parallel === undefined
      ? undefined
      : async (): Promise<void> => {
          device.synchronize();
          const t0 = performance.now();
          be.scale(params.trainable.grads, 1 / world);
          await parallel.reduceGradients(params.trainable.grads);
          device.synchronize();
          commMs += performance.now() - t0;
        };
  try {
    for (let i = 0; i < o.warmup; i++) await trainStep(model, batch, optimizer, undefined, reduce);
    device.synchronize();
    device.resetPeak();
    const stepMs: number[] = [];
    const commPerStep: number[] = [];
    let loss = NaN;
    for (let i = 0; i < o.steps; i++) {
      device.synchronize();
      const t0 = performance.now();
      commMs = 0;
      loss = await trainStep(model, batch, optimizer, undefined, reduce);
      device.synchronize();
      stepMs.push(performance.now() - t0);
      commPerStep.push(commMs);
    }
    const mem = device.memory();
    const breakdown = o.profile ? await profiledStep(device, model, batch, optimizer) : null;
    const medianStepMs = medianOf(stepMs);
    const tokens = o.seq * o.mbs * world;
    const tokensPerSecond = tokens / (medianStepMs / 1000);
    return {
      ...header(device, o, gc, loaded),
      commShare: parallel === undefined ? null : medianOf(commPerStep) / medianStepMs,
      stepMs,
      medianStepMs,
      tokensPerSecond,
      tflops: (flopsPerToken(cfg, o.seq, gc) * tokensPerSecond) / 1e12,
      loss,
      memory: mem === null ? null : { peakInUse: mem.peakInUseBytes / GIB, peakReserved: mem.peakReservedBytes / GIB, afterLoadInUse: loaded.afterLoadInUse / GIB },
      breakdown,
    };
  } finally {
    freeCausalLm(model);
    be.free(optimizer.m);
    be.free(optimizer.v);
  }
}

function header(device: BenchDevice, o: GroupOptions, gc: boolean, loaded: Loaded | null) {
  return {
    model: o.model,
    mode: o.mode,
    gc,
    seq: o.seq,
    mbs: o.mbs,
    device: device.description,
    warmup: o.warmup,
    steps: o.steps,
    trainableParams: loaded?.params.trainable.total ?? NaN,
    loadSeconds: loaded?.loadSeconds ?? NaN,
    worldSize: o.collective?.worldSize ?? 1,
  };
}

function failed(device: BenchDevice, o: GroupOptions, gc: boolean, loaded: Loaded | null, e: unknown): BenchResult {
  return { ...header(device, o, gc, loaded), stepMs: [], medianStepMs: NaN, tokensPerSecond: NaN, tflops: NaN, loss: NaN, memory: null, breakdown: null, commShare: null, error: errorMessage(e) };
}

/**
 * Loads the model once (as `tuna train` does: LoRA settings, loader, PEFT init) and measures each
 * checkpointing setting over it; a failing setting (e.g. out of memory) is reported, not thrown.
 * Frees everything it allocated; `log` receives progress and each result as it is measured.
 */
export async function runBenchGroup(device: BenchDevice, pools: SyntheticPools, o: GroupOptions, log: (line: string) => void): Promise<BenchResult[]> {
  const be = device.backend;
  const label = `(synthetic ${o.model} ${o.mode} weights)`;
  const inUse0 = device.memory()?.inUseBytes ?? 0;
  let loaded: Loaded | null = null;
  try {
    const cfg = parseModelConfig(o.configJson, label);
    const source = createSyntheticWeights(cfg, pools, label);
    const lora = makeLoraSettings({ ...LORA, dropout: o.loraDropout ?? LORA.dropout }, cfg);
    const t0 = performance.now();
    const quantize = o.mode === "qlora-quantize" ? ({ kind: "4bit", quantType: "nf4", doubleQuant: true } as const) : null;
    const params = await loadCausalLmParams(be, cfg, source, { mode: "lora", lora, baseDtype: "bf16", quantize });
    await source.close();
    const initial = initLoraWeights(lora, cfg, createRng(o.seed)).flat;
    be.upload(params.trainable.params, initial);
    device.synchronize();
    const loadSeconds = (performance.now() - t0) / 1000;
    loaded = { cfg, params, initial, loadSeconds, afterLoadInUse: (device.memory()?.inUseBytes ?? 0) - inUse0 };
    log(`loaded ${o.model} ${o.mode} in ${loadSeconds.toFixed(1)} s` + (device.memory() === null ? "" : `, ${(loaded.afterLoadInUse / GIB).toFixed(2)} GiB on the device`));
  } catch (e) {
    log(`loading ${o.model} ${o.mode} failed: ${errorMessage(e)}`);
    return o.gcs.map((gc) => failed(device, o, gc, null, e));
  }
  const results: BenchResult[] = [];
  try {
    const batch = randomBatch(loaded.cfg.vocabSize, o.seq, o.mbs, o.seed);
    for (const gc of o.gcs) {
      let r: BenchResult;
      try {
        r = await measure(device, loaded, gc, batch, o);
      } catch (e) {
        r = failed(device, o, gc, loaded, e);
      }
      results.push(r);
      for (const line of [resultLine(r), ...breakdownLines(r)]) log(line);
    }
  } finally {
    try {
      freeParams(be, loaded.params);
    } catch (e) {
      log(`freeing ${o.model} ${o.mode} failed: ${errorMessage(e)}`);
    }
  }
  const after = device.memory();
  if (after !== null) {
    const left = (after.inUseBytes - inUse0) / 2 ** 20;
    // What stays is the backend's own (cuBLASLt's workspace, allocated by the first GEMM); more is a leak.
    log(`after freeing the model: ${left.toFixed(1)} MiB more in use than before loading, ${(after.reservedBytes / GIB).toFixed(2)} GiB reserved`);
  }
  return results;
}
