import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PackedSequence } from "../../src/data/types.ts";
import { train, type LogEntry, type TrainerSettings } from "../../src/train/trainer.ts";
import { saveCheckpointAtomically, listCheckpoints } from "../../src/train/checkpoint.ts";
import { readResumeState, writeTrainerFiles } from "../../src/train/state-files.ts";
import { createRng } from "../../src/util/random.ts";
import { tinyModel, writeTiny } from "../model/causal-lm/tiny-model.ts";
import { asTrainingModel, type CausalLm } from "../../src/model/causal-lm/model.ts";

function sequences(V: number, count: number, seed: number): PackedSequence[] {
  const rng = createRng(seed);
  return Array.from({ length: count }, (_, i) => {
    const n = 6 + (i % 5);
    const ids = Int32Array.from({ length: n }, () => 3 + Math.floor(rng.uniform() * (V - 3)));
    const trained = Uint8Array.from({ length: n }, (_, t) => (t < 2 ? 0 : 1));
    return { inputIds: ids, trained, docLengths: [n], rows: [i] };
  });
}

function settings(over: Partial<TrainerSettings> = {}): TrainerSettings {
  return {
    seed: 3,
    numTrainEpochs: 2,
    maxSteps: -1,
    trainBatchSize: 2,
    evalBatchSize: 4,
    gradientAccumulationSteps: 2,
    learningRate: 5e-3,
    schedule: { type: "cosine", warmupSteps: 0, warmupRatio: 0.1 },
    adamw: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 },
    maxGradNorm: 1,
    padded: false,
    sampling: "random",
    dataSeed: undefined,
    dropLast: false,
    logging: { strategy: "steps", steps: 1, firstStep: false },
    eval: { strategy: "no", steps: 1 },
    save: { strategy: "no", steps: 1 },
    neftuneNoiseAlpha: 5,
    nanInfPolicy: "stop",
    padTokenId: 0,
    ...over,
  };
}

async function freshModel(dropout = 0.1): Promise<{ model: CausalLm; V: number }> {
  const { dir, cfg } = await writeTiny();
  return { model: await tinyModel(dir, cfg, { mode: "lora", lora: { dropout }, seed: 9 }), V: cfg.vocabSize };
}

const losses = (h: LogEntry[]): number[] => h.filter((e) => "loss" in e).map((e) => e["loss"]!);

test("training lowers the loss, and the same seed gives bit-identical losses", async () => {
  const a = await freshModel();
  const data = { train: sequences(a.V, 8, 1) };
  const r1 = await train(asTrainingModel(a.model), data, settings({ numTrainEpochs: 6, learningRate: 2e-2 }), { onLog: () => undefined, saveCheckpoint: () => Promise.resolve() });
  const b = await freshModel();
  const r2 = await train(asTrainingModel(b.model), data, settings({ numTrainEpochs: 6, learningRate: 2e-2 }), { onLog: () => undefined, saveCheckpoint: () => Promise.resolve() });
  const l1 = losses(r1.logHistory);
  assert.equal(r1.globalStep, 12); // 8 sequences / batch 2 = 4 micro-batches = 2 steps per epoch
  assert.deepEqual(losses(r2.logHistory), l1);
  // Each epoch (2 steps) sees every sequence once: compare the first epoch's mean loss with the last one's.
  const epochMean = (e: number): number => (l1[2 * e]! + l1[2 * e + 1]!) / 2;
  assert.ok(epochMean(5) < epochMean(0) * 0.9, `epoch loss ${epochMean(0)} -> ${epochMean(5)}`);
});

test("resume from a checkpoint continues exactly: the same losses as the uninterrupted run", async () => {
  const out = await mkdtemp(join(tmpdir(), "tuna-resume-"));
  const s = settings({ numTrainEpochs: 3, save: { strategy: "steps", steps: 2 } });
  const full = await freshModel();
  const data = { train: sequences(full.V, 10, 2), eval: sequences(full.V, 3, 5) };
  const hooksFor = (model: CausalLm) => ({
    onLog: () => undefined,
    saveCheckpoint: async (step: number, snap: Parameters<typeof writeTrainerFiles>[3]) => {
      await saveCheckpointAtomically(out, step, (dir) =>
        writeTrainerFiles(dir, model.backend, model.params.trainable, snap, { numTrainEpochs: 3, loggingSteps: 1, evalSteps: 1, saveSteps: 2, trainBatchSize: 2 }),
      );
    },
  });
  const uninterrupted = await train(asTrainingModel(full.model), data, { ...s, eval: { strategy: "steps", steps: 2 } }, hooksFor(full.model));
  const checkpoints = await listCheckpoints(out);
  assert.deepEqual(checkpoints.map((c) => c.step), [2, 4, 6, 8, 9]);

  const resumed = await freshModel();
  const state = await readResumeState(checkpoints[1]!.dir, resumed.model.params.trainable);
  assert.equal(state.globalStep, 4);
  const r = await train(asTrainingModel(resumed.model), data, { ...s, eval: { strategy: "steps", steps: 2 }, save: { strategy: "no", steps: 1 } }, { onLog: () => undefined, saveCheckpoint: () => Promise.resolve() }, state);
  assert.equal(r.globalStep, uninterrupted.globalStep);
  // tokens_per_second is a wall-clock measure; everything else is the same run.
  const untimed = (h: typeof r.logHistory): typeof r.logHistory =>
    h.map((e) => {
      const rest = { ...e };
      delete rest.tokens_per_second;
      return rest;
    });
  assert.deepEqual(untimed(r.logHistory), untimed(uninterrupted.logHistory));
  assert.ok(r.logHistory.every((e) => e.loss === undefined || (e.tokens_per_second ?? 0) > 0), "each training log entry has its throughput");
  assert.equal(r.trainLoss, uninterrupted.trainLoss);
});

test("gradient accumulation: GA 2 x batch 1 takes the same steps as GA 1 x batch 2 (token-mean over both)", async () => {
  // Documents of different lengths, so a mean per micro-batch would weight tokens differently; the
  // pre-clip gradient norm of every step is compared (AdamW's first steps hide a gradient's scale). No
  // dropout: its masks are drawn per micro-batch, so the two layouts would draw different ones.
  const a = await freshModel(0);
  const b = await freshModel(0);
  const data = { train: sequences(a.V, 6, 3) };
  const base = { maxSteps: 3, numTrainEpochs: 1, neftuneNoiseAlpha: undefined, sampling: "random", maxGradNorm: 1e9 } as const;
  const norms = (into: number[]) => ({ onLog: () => undefined, onProgress: (p: { gradNorm: number }) => void into.push(p.gradNorm), saveCheckpoint: () => Promise.resolve() });
  const na: number[] = [];
  const nb: number[] = [];
  const ra = await train(asTrainingModel(a.model), data, settings({ ...base, trainBatchSize: 1, gradientAccumulationSteps: 2 }), norms(na));
  const rb = await train(asTrainingModel(b.model), data, settings({ ...base, trainBatchSize: 2, gradientAccumulationSteps: 1 }), norms(nb));
  assert.equal(na.length, 3);
  for (let i = 0; i < 3; i++) assert.ok(Math.abs(na[i]! - nb[i]!) <= 1e-6 * nb[i]!, `step ${i + 1}: grad norm ${na[i]} vs ${nb[i]}`);
  assert.ok(Math.abs(ra.trainLoss - rb.trainLoss) <= 1e-6 * Math.abs(rb.trainLoss), `train loss ${ra.trainLoss} vs ${rb.trainLoss}`);
  const pa = await a.model.backend.downloadF32(a.model.params.trainable.params);
  const pb = await b.model.backend.downloadF32(b.model.params.trainable.params);
  let maxDiff = 0;
  for (let i = 0; i < pa.length; i++) maxDiff = Math.max(maxDiff, Math.abs(pa[i]! - pb[i]!));
  assert.ok(maxDiff < 1e-5, `max param difference ${maxDiff}`);
});

test("a NaN loss stops with the step and its source rows, or is skipped by option", async () => {
  const a = await freshModel();
  const data = { train: sequences(a.V, 4, 4) };
  // A huge learning rate with no clipping blows the weights up within a few steps.
  const s = settings({ learningRate: 1e6, maxGradNorm: 0, numTrainEpochs: 20, neftuneNoiseAlpha: undefined });
  await assert.rejects(
    train(asTrainingModel(a.model), data, s, { onLog: () => undefined, saveCheckpoint: () => Promise.resolve() }),
    /step \d+: the loss is \S+ and the gradient norm \S+ \(batch built from source rows [\d, ]+\)/,
  );
  const b = await freshModel();
  const skipped: number[] = [];
  const onLog = (e: LogEntry): void => {
    if (e["skipped_nonfinite_step"] !== undefined) skipped.push(e["skipped_nonfinite_step"]);
  };
  await train(asTrainingModel(b.model), data, { ...s, nanInfPolicy: "skip" }, { onLog, saveCheckpoint: () => Promise.resolve() }).catch((e: unknown) => {
    // Skipping can leave an epoch with no finite step at all; that is reported, not looped on.
    assert.match(String(e), /made no optimizer step/);
  });
  assert.ok(skipped.length > 0);
});

test("optimizer offload: moments in another backend's memory (the host), the same steps bit for bit; its moments are what a checkpoint saves", async () => {
  const { createCpuBackend } = await import("../../src/backend/cpu/index.ts");
  const { optimizerOnHost } = await import("../../src/train/offload.ts");
  const a = await freshModel();
  const data = { train: sequences(a.V, 8, 1) };
  const snaps: number[][] = [];
  const saveA = (_step: number, snap: { moments: { m: Float32Array } }): Promise<void> => {
    snaps.push([...snap.moments.m.subarray(0, 8)]);
    return Promise.resolve();
  };
  const s = settings({ numTrainEpochs: 3, save: { strategy: "steps", steps: 3 } });
  const r1 = await train(asTrainingModel(a.model), data, s, { onLog: () => undefined, saveCheckpoint: saveA });
  const b = await freshModel();
  const cpu = createCpuBackend();
  let hostUpdates = 0;
  const host = new Proxy(cpu, {
    get(target, key) {
      if (key === "adamwUpdate") {
        return (...args: Parameters<typeof cpu.adamwUpdate>) => {
          hostUpdates++;
          target.adamwUpdate(...args);
        };
      }
      const value: unknown = Reflect.get(target, key);
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  const placement = optimizerOnHost(b.model.backend, host);
  const offloadedSnaps: number[][] = [];
  const r2 = await train(asTrainingModel(b.model), data, s, {
    onLog: () => undefined,
    saveCheckpoint: (_step, snap) => {
      offloadedSnaps.push([...snap.moments.m.subarray(0, 8)]);
      return Promise.resolve();
    },
    optimizer: placement,
  });
  assert.deepEqual(losses(r2.logHistory), losses(r1.logHistory));
  const pa = await a.model.backend.downloadF32(a.model.params.trainable.params);
  const pb = await b.model.backend.downloadF32(b.model.params.trainable.params);
  assert.deepEqual(pb, pa, "the same parameters after the run");
  assert.ok(snaps.length >= 2);
  assert.deepEqual(offloadedSnaps, snaps, "the checkpoint's moments come from the host backend");
  assert.ok(snaps.at(-1)!.some((x) => x !== 0), "moments were written");
  assert.ok(hostUpdates >= r2.globalStep, `AdamW ran on the host backend (${hostUpdates} updates)`);
});
