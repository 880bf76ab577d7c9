// Orders packed sequences into batches (the Hugging Face Trainer's sampler orders) and lays a batch out
// as the model's flat Batch: documents as cuSeqlens segments, positions per document, shifted targets.
import { IGNORE_INDEX, type Batch } from "./batch.ts";
import { TunaError } from "../util/errors.ts";
import { TorchCpuGenerator, torchRandperm } from "../util/torch-random.ts";
import type { PackedSequence } from "./types.ts";

export { countTrainedTokens as countTrainedTargets } from "./batch.ts";

/**
 * The order of a split's sequences, by transformers' `train_sampling_strategy` names: "random" (RandomSampler as
 * accelerate seeds it), "sequential", "group_by_length" (LengthGroupedSampler).
 */
export type SamplingStrategy = "random" | "sequential" | "group_by_length";

export interface BatchOptions {
  batchSize: number;
  /** true: one row per sequence, right-padded to the longest; false: padding-free, the batch's sequences in one flat row. */
  padded: boolean;
  sampling: SamplingStrategy;
  /** The run's seed (args.seed): what the Trainer seeds torch's global generator with. */
  seed: number;
  /** args.data_seed: the random sampler's seed when given (accelerate's SeedableRandomSampler), else `seed`. */
  dataSeed?: number;
  epoch: number;
  /** group_by_length sorts megabatches of batchSize x gradient_accumulation_steps sequences, as the Trainer's sampler. Default 1. */
  gradientAccumulationSteps?: number;
  /** Drop the last batch when it has fewer than batchSize sequences. Default false. */
  dropLast?: boolean;
}

export interface BatchPlan {
  sequenceIndices: number[];
  /** The layout toModelBatch builds (from BatchOptions.padded). */
  padded: boolean;
}

/**
 * The sequence order of an epoch, as the Hugging Face Trainer's sampler gives it (test/data/batches.test.ts
 * compares with a real Trainer's runs, test/golden/trainer-order):
 * - random: torch.randperm of a generator seeded with (data_seed or seed) + epoch — accelerate's
 *   SeedableRandomSampler, which the Trainer uses by default;
 * - group_by_length: LengthGroupedSampler draws torch.randperm from torch's global generator, which the Trainer
 *   seeds with `seed` when it is built, after one 64-bit draw per epoch (each DataLoader iterator takes its base
 *   seed from it). That is the Trainer's order exactly when nothing else draws from that generator (no dropout,
 *   no evaluation between epochs); otherwise the Trainer's own order depends on those draws, and this is the
 *   order it would have without them;
 * - sequential: 0, 1, 2, ...
 */
function epochOrder(n: number, lengths: readonly number[], o: BatchOptions): number[] {
  if (o.sampling === "sequential") return Array.from({ length: n }, (_, i) => i);
  if (o.sampling === "random") return torchRandperm(n, (o.dataSeed ?? o.seed) + o.epoch);
  const global = new TorchCpuGenerator(o.seed);
  let order: number[] = [];
  for (let e = 0; e <= o.epoch; e++) {
    global.random64();
    order = torchRandperm(n, global);
  }
  return groupByLength(order, lengths, o.batchSize * (o.gradientAccumulationSteps ?? 1));
}

/**
 * transformers' `get_length_grouped_indices`: cut the (shuffled) order into megabatches of
 * min(n / (4 * batchSize), 50) batches (at least 1), sort each by length descending (stable), then swap
 * the longest sequence to the very front so an out-of-memory shows up on the first step.
 */
export function groupByLength(order: readonly number[], lengths: readonly number[], batchSize: number): number[] {
  const n = order.length;
  const megabatchSize = Math.max(1, Math.min(Math.floor(n / (batchSize * 4)), 50)) * batchSize;
  const megabatches: number[][] = [];
  for (let i = 0; i < n; i += megabatchSize) {
    megabatches.push(order.slice(i, i + megabatchSize).sort((a, b) => lengths[b]! - lengths[a]!));
  }
  if (megabatches.length === 0) return [];
  let longest = 0;
  for (let m = 1; m < megabatches.length; m++) {
    // argmax keeps the first maximum, as torch.argmax does.
    if (lengths[megabatches[m]![0]!]! > lengths[megabatches[longest]![0]!]!) longest = m;
  }
  const first = megabatches[0]!;
  const other = megabatches[longest]!;
  const t = first[0]!;
  first[0] = other[0]!;
  other[0] = t;
  return megabatches.flat();
}

/** The batches of one epoch, deterministic given the seeds and the epoch (epochOrder). */
export function makeBatches(sequences: readonly PackedSequence[], options: BatchOptions): BatchPlan[] {
  const { batchSize } = options;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new TunaError("CONFIG_INVALID", `batch size must be a positive integer, got ${batchSize}`);
  }
  const n = sequences.length;
  const order = epochOrder(n, sequences.map((s) => s.inputIds.length), options);
  const plans: BatchPlan[] = [];
  for (let i = 0; i < n; i += batchSize) {
    const sequenceIndices = order.slice(i, i + batchSize);
    if (sequenceIndices.length < batchSize && options.dropLast === true) break;
    plans.push({ sequenceIndices, padded: options.padded });
  }
  return plans;
}

function checkSequence(seq: PackedSequence, index: number): void {
  let total = 0;
  for (const d of seq.docLengths) {
    if (!Number.isInteger(d) || d < 1) throw new TunaError("INTERNAL", `sequence ${index}: document length ${d} is not a positive integer`);
    total += d;
  }
  if (total !== seq.inputIds.length || seq.trained.length !== seq.inputIds.length) {
    throw new TunaError(
      "INTERNAL",
      `sequence ${index}: ${seq.inputIds.length} ids, ${seq.trained.length} trained flags and documents summing to ${total}; the packing stage must keep them equal`,
    );
  }
}

/**
 * Lays a planned batch out as the model's Batch. Each document is its own attention segment with positions
 * from 0; the target of token t is ids[t+1] when that token is trained and in the same document, so a
 * document's first token is never a target (TRL's padding-free rule) and no target crosses a boundary.
 * Padded: one row per sequence, padded with padTokenId to the longest; the padding is one isolated
 * segment with no targets, its positions continuing the row's last document (as transformers counts them).
 */
export function toModelBatch(plan: BatchPlan, sequences: readonly PackedSequence[], padTokenId = 0): Batch {
  const seqs = plan.sequenceIndices.map((i) => {
    const seq = sequences[i];
    if (seq === undefined) throw new TunaError("INTERNAL", `batch plan names sequence ${i} but there are ${sequences.length}`);
    checkSequence(seq, i);
    return seq;
  });
  let width = 0;
  let total = 0;
  for (const seq of seqs) {
    width = Math.max(width, seq.inputIds.length);
    total += seq.inputIds.length;
  }
  const N = plan.padded ? width * seqs.length : total;
  const ids = new Int32Array(N); // (N)
  const positions = new Int32Array(N); // (N)
  const targets = new Int32Array(N).fill(IGNORE_INDEX); // (N)
  const cu: number[] = [0];
  const rows: [number, number][] = [];
  let at = 0;
  for (const seq of seqs) {
    const rowStart = at;
    let doc = 0;
    for (const length of seq.docLengths) {
      for (let t = 0; t < length; t++) {
        ids[at + t] = seq.inputIds[doc + t]!;
        positions[at + t] = t;
        if (t + 1 < length && seq.trained[doc + t + 1] !== 0) targets[at + t] = seq.inputIds[doc + t + 1]!;
      }
      at += length;
      doc += length;
      cu.push(at);
    }
    if (plan.padded) {
      const last = seq.docLengths[seq.docLengths.length - 1] ?? 0;
      const pad = width - seq.inputIds.length;
      for (let t = 0; t < pad; t++) {
        ids[at + t] = padTokenId;
        positions[at + t] = last + t;
      }
      if (pad > 0) {
        at += pad;
        cu.push(at);
      }
      rows.push([rowStart, width]);
    }
  }
  if (!plan.padded) rows.push([0, N]);
  return { ids, positions, cuSeqlens: Int32Array.from(cu), targets, rows };
}
