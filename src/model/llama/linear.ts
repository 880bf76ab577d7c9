// One linear layer, forward and backward: y = x W^T (+ b) + scale * (dropout(x) A^T) B^T.
// The base weight may be dense or 4-bit (dequantized into a shared scratch before the GEMM).
import type { Backend, Tensor } from "../../backend/types.ts";
import type { Rng } from "../../util/random.ts";
import { TunaError } from "../../util/errors.ts";
import type { LoraSlots } from "./activations.ts";
import type { Linear } from "./params.ts";
import { numel } from "../../util/shape.ts";

/** First numel(shape) elements of a flat scratch tensor, viewed with that shape. */
export function sized(backend: Backend, t: Tensor, shape: readonly number[]): Tensor {
  const flat = t.shape.length === 1 ? t : backend.view(t, [t.size]);
  return backend.view(backend.rows(flat, 0, numel(shape)), shape);
}

export interface LinearScratch {
  /** Scratch of at least out*in elements (activation dtype), for dequantized 4-bit weights. */
  dequant: Tensor | null;
  /**
   * bf16 twins of trainable f32 tensors (LoRA A/B, or full fine-tuning's weights) when activations are
   * bf16: the GEMMs read the twin, refreshed from the f32 master at every forward (as autocast does).
   */
  lowp?: ReadonlyMap<Tensor, Tensor> | undefined;
}

/** The tensor a GEMM against bf16 activations reads: the bf16 twin of a trainable f32 tensor, if any. */
function gemmOperand(scratch: LinearScratch, t: Tensor): Tensor {
  return scratch.lowp?.get(t) ?? t;
}

function denseWeight(backend: Backend, lin: Linear, scratch: LinearScratch): Tensor {
  if (lin.weight !== null) return gemmOperand(scratch, lin.weight);
  if (lin.quant === null || scratch.dequant === null) throw new TunaError("INTERNAL", `${lin.module}: neither a dense nor a 4-bit weight is loaded`);
  const w = sized(backend, scratch.dequant, [lin.outFeatures, lin.inFeatures]);
  backend.dequantize4bit(backend.view(w, [w.size]), lin.quant);
  return w;
}

/**
 * Fills a dropout keep-mask (1 = keep) on the backend from two seed words drawn from the host RNG, so a
 * recomputation from the same RNG state (gradient checkpointing) rebuilds the very same mask.
 */
function dropoutMask(backend: Backend, mask: Tensor, p: number, rng: Rng): void {
  const seed: [number, number] = [Math.floor(rng.uniform() * 2 ** 32), Math.floor(rng.uniform() * 2 ** 32)];
  backend.dropoutMask(mask, p, seed);
}

/** y (N, out) = linear(x (N, in)). */
export function linearForward(
  backend: Backend,
  lin: Linear,
  y: Tensor,
  x: Tensor,
  slots: LoraSlots | undefined,
  scratch: LinearScratch,
  /** The dropout RNG in a training forward; null = no dropout (evaluation, generation). */
  rng: Rng | null,
): void {
  const N = x.shape[0]!;
  backend.matmul(y, x, denseWeight(backend, lin, scratch), { transB: true });
  if (lin.bias !== null) backend.addBias(y, lin.bias);
  const lora = lin.lora;
  if (lora === null || slots === undefined) return;
  let xd = x;
  slots.dropoutApplied = false;
  if (rng !== null && lora.dropout > 0 && slots.mask !== null && slots.xd !== null) {
    slots.dropoutApplied = true;
    dropoutMask(backend, slots.mask, lora.dropout, rng);
    backend.dropoutApply(slots.xd, x, slots.mask, lora.dropout);
    xd = slots.xd;
  }
  const xa = sized(backend, slots.xa, [N, lora.rank]);
  backend.matmul(xa, xd, gemmOperand(scratch, lora.A), { transB: true });
  backend.matmul(y, xa, gemmOperand(scratch, lora.B), { transB: true, alpha: lora.scale, accumulate: true });
}

export interface LinearBackwardScratch extends LinearScratch {
  dxa: Tensor; // flat, >= N * R
  dtmp: Tensor; // >= N * in
}

/** dx (N, in) = (or += when accumulate) the input gradient; parameter gradients accumulate. */
export function linearBackward(
  backend: Backend,
  lin: Linear,
  dx: Tensor,
  dy: Tensor,
  x: Tensor,
  slots: LoraSlots | undefined,
  scratch: LinearBackwardScratch,
  accumulate: boolean,
): void {
  const N = x.shape[0]!;
  backend.matmul(dx, dy, denseWeight(backend, lin, scratch), { accumulate });
  if (lin.dweight !== null) backend.matmul(lin.dweight, dy, x, { transA: true, accumulate: true });
  if (lin.dbias !== null) backend.biasBackward(lin.dbias, dy);
  const lora = lin.lora;
  if (lora === null || slots === undefined) return;
  const dropout = slots.dropoutApplied;
  const xd = dropout ? slots.xd! : x;
  const xa = sized(backend, slots.xa, [N, lora.rank]);
  const dxa = sized(backend, scratch.dxa, [N, lora.rank]);
  backend.matmul(lora.dB, dy, xa, { transA: true, alpha: lora.scale, accumulate: true });
  backend.matmul(dxa, dy, gemmOperand(scratch, lora.B), { alpha: lora.scale });
  backend.matmul(lora.dA, dxa, xd, { transA: true, accumulate: true });
  if (dropout) {
    const tmp = sized(backend, scratch.dtmp, [N, lin.inFeatures]);
    backend.matmul(tmp, dxa, gemmOperand(scratch, lora.A));
    backend.dropoutApply(tmp, tmp, slots.mask!, lora.dropout);
    backend.add(dx, dx, tmp);
  } else {
    backend.matmul(dx, dxa, gemmOperand(scratch, lora.A), { accumulate: true });
  }
}
