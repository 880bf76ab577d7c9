// The small model interface the trainer uses, whatever the family: its trainable buffers, a batch put on
// the backend, forward with the loss, backward scaled, and the dropout generator a checkpoint saves.
import type { Backend } from "../backend/types.ts";
import type { Batch } from "../data/batch.ts";
import type { Rng } from "../util/random.ts";
import type { TrainableBuffers } from "./trainable.ts";

export interface ForwardOptions {
  /** A training forward: LoRA dropout on (HF's model.train()); evaluation and generation leave it off. */
  training?: boolean;
  /** NEFTune (training only): uniform noise of magnitude alpha / sqrt(L * C) added to the input embeddings. */
  neftune?: { alpha: number; rng: Rng };
  /** false: the base model alone, LoRA and trained token rows off (PEFT's disable_adapter: DPO's reference). */
  adapters?: boolean;
}

/** What a forward returns: the sum of token losses (f64), the trained tokens, and each token's loss (f32 (N), 0 where no target). */
export interface ForwardResult {
  lossSum: number;
  tokens: number;
  tokenLosses: Float32Array;
}

/** A factor on the gradient of the token losses of rows [start, start + count) of the batch (DPO weighs each sequence). */
export interface SpanScale {
  start: number;
  count: number;
  scale: number;
}

/**
 * Where a layer's frozen weights live while the layer is not computing. Sharded data parallelism (ZeRO-3,
 * FSDP FULL_SHARD) keeps 1/N of them per rank: the model calls acquire(l) before it uses layer l (forward,
 * the recompute of gradient checkpointing, backward) and release(l) after. Without one, every layer stays.
 * `next` names the layer the model will acquire after this one (none at the end of a pass), so its weights
 * can be fetched while this layer computes.
 */
export interface LayerResidency {
  acquire(layer: number, next?: number): Promise<void>;
  release(layer: number): void;
}

/** A batch on the backend, opaque to the trainer. */
export interface UploadedBatch {
  readonly N: number;
}

export interface TrainingModel {
  readonly backend: Backend;
  readonly trainable: TrainableBuffers;
  /** Where dropout masks come from; a checkpoint saves and restores its state. */
  dropoutRng: Rng;
  upload(batch: Batch): UploadedBatch;
  /** The sum of token losses (f64) and the number of trained tokens. */
  forward(batch: UploadedBatch, options?: ForwardOptions): Promise<ForwardResult>;
  /**
   * Accumulates gradients of gradScale * lossSum into the trainable gradient buffer. `layerDone(l)` is called as
   * soon as layer l's gradients are complete (layers finish from the last to the first; the rest, embeddings,
   * norm and head, are complete when backward returns): where data parallelism starts reducing a bucket.
   */
  backward(batch: UploadedBatch, gradScale: number, layerDone?: (layer: number) => void, spans?: readonly SpanScale[]): Promise<void>;
  free(batch: UploadedBatch): void;
  /** What the loss of this batch is a mean over: its trained tokens (when absent), or e.g. its preference pairs. */
  lossUnits?(batch: Batch): number;
  /**
   * The objective's own metrics since the last call, as sums and counts (DPO's rewards and log-probabilities),
   * of the training forwards or of the evaluation ones. Every rank returns the same keys.
   */
  takeMetrics?(kind: "train" | "eval"): Record<string, { sum: number; count: number }>;
}
