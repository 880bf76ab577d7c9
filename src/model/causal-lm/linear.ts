// One linear layer, forward and backward: y = x W^T (+ b) + scale * (dropout(x) A^T) B^T, or with DoRA the
// adapted output rescaled per output feature (./dora.ts). The base weight may be dense or 4-bit
// (dequantized into a shared scratch before the GEMM).
import type { Backend, Tensor } from "../../backend/types.ts";
import type { Rng } from "../../util/random.ts";
import type { LoraSlots } from "./activations.ts";
import { doraLinearBackward, doraLinearForward } from "./dora.ts";
import { adapterInput, denseWeight, gemmOperand, sized, type LinearScratch } from "./linear-operands.ts";
import type { Linear } from "./params.ts";

export type { LinearScratch } from "./linear-operands.ts";

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
  const lora = lin.lora;
  if (lora?.dora != null && slots !== undefined) {
    doraLinearForward(backend, lin, lora, lora.dora, y, x, slots, scratch, rng);
    return;
  }
  const N = x.shape[0]!;
  backend.matmul(y, x, denseWeight(backend, lin, scratch), { transB: true });
  if (lin.bias !== null) backend.addBias(y, lin.bias);
  if (lin.loraRows !== undefined && slots !== undefined) {
    for (const g of lin.loraRows) {
      const xs = backend.rows(x, g.first, g.count);
      const ys = backend.rows(y, g.first, g.count);
      const xa = sized(backend, slots.xa, [g.count, g.lora.rank]);
      backend.matmul(xa, xs, gemmOperand(scratch, g.lora.A), { transB: true });
      backend.matmul(ys, xa, gemmOperand(scratch, g.lora.B), { transB: true, alpha: g.lora.scale, accumulate: true });
      backend.free(ys);
      backend.free(xs);
    }
  }
  if (lora === null || slots === undefined) return;
  const xd = adapterInput(backend, lora, x, slots, rng);
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
  const lora = lin.lora;
  if (lora?.dora != null && slots !== undefined) {
    doraLinearBackward(backend, lin, lora, lora.dora, dx, dy, x, slots, scratch, accumulate);
    return;
  }
  backend.matmul(dx, dy, denseWeight(backend, lin, scratch), { accumulate });
  if (lin.dweight !== null) backend.matmul(lin.dweight, dy, x, { transA: true, accumulate: true });
  if (lin.dbias !== null) backend.biasBackward(lin.dbias, dy);
  if (lora === null || slots === undefined) return;
  loraBackward(backend, lin, dy, dx, x, slots, scratch);
}

/**
 * The adapter's part of the backward for the gradient dz of its (scaled) output: dB, dA accumulate and
 * dx += the input gradient through A (through the dropout mask when the forward applied it).
 */
export function loraBackward(
  backend: Backend,
  lin: Linear,
  dz: Tensor,
  dx: Tensor,
  x: Tensor,
  slots: LoraSlots,
  scratch: LinearBackwardScratch,
  /** DoRA with dropout: the base weight's path on the dropped input, whose gradient dbase goes through W and the mask too. */
  droppedBase?: { dbase: Tensor; weight: Tensor },
): void {
  const lora = lin.lora!;
  const N = x.shape[0]!;
  const dropout = slots.dropoutApplied;
  const xd = dropout ? slots.xd! : x;
  const xa = sized(backend, slots.xa, [N, lora.rank]);
  const dxa = sized(backend, scratch.dxa, [N, lora.rank]);
  backend.matmul(lora.dB, dz, xa, { transA: true, alpha: lora.scale, accumulate: true });
  backend.matmul(dxa, dz, gemmOperand(scratch, lora.B), { alpha: lora.scale });
  backend.matmul(lora.dA, dxa, xd, { transA: true, accumulate: true });
  if (dropout) {
    // The gradient reaching the dropped input: through A, and for DoRA through W on that input too.
    const tmp = sized(backend, scratch.dtmp, [N, lin.inFeatures]);
    if (droppedBase !== undefined) backend.matmul(tmp, droppedBase.dbase, droppedBase.weight);
    backend.matmul(tmp, dxa, gemmOperand(scratch, lora.A), { accumulate: droppedBase !== undefined });
    backend.dropoutApply(tmp, tmp, slots.mask!, lora.dropout);
    backend.add(dx, dx, tmp);
  } else {
    backend.matmul(dx, dxa, gemmOperand(scratch, lora.A), { accumulate: true });
  }
}
