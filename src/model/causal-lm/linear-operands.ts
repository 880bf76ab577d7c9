// What a linear layer's GEMMs read: the dense weight (or a 4-bit one dequantized into the shared scratch),
// the bf16 twins of trainable f32 tensors, sized views of flat scratch, and the dropout of the input.
import type { Backend, Tensor } from "../../backend/types.ts";
import type { Rng } from "../../util/random.ts";
import { TunaError } from "../../util/errors.ts";
import { numel } from "../../util/shape.ts";
import type { LoraSlots } from "./activations.ts";
import type { Linear, LoraModule } from "./params.ts";

export interface LinearScratch {
  /**
   * Scratch of at least out*in elements (activation dtype): dequantized 4-bit weights, and DoRA's adapted
   * weight W + scale * B A whose row norms it takes.
   */
  dequant: Tensor | null;
  /**
   * bf16 twins of trainable f32 tensors (LoRA A/B, or full fine-tuning's weights) when activations are
   * bf16: the GEMMs read the twin, refreshed from the f32 master at every forward (as autocast does).
   */
  lowp?: ReadonlyMap<Tensor, Tensor> | undefined;
  /**
   * DoRA's row norms depend on the weights only: generation computes them in its first forward and then
   * sets this, so every further token reuses them. Training leaves it unset (each forward computes them).
   */
  reuseDoraNorms?: boolean;
}

/** First numel(shape) elements of a flat scratch tensor, viewed with that shape. */
export function sized(backend: Backend, t: Tensor, shape: readonly number[]): Tensor {
  const flat = t.shape.length === 1 ? t : backend.view(t, [t.size]);
  return backend.view(backend.rows(flat, 0, numel(shape)), shape);
}

/** The tensor a GEMM against bf16 activations reads: the bf16 twin of a trainable f32 tensor, if any. */
export function gemmOperand(scratch: LinearScratch, t: Tensor): Tensor {
  return scratch.lowp?.get(t) ?? t;
}

/** The (out, in) weight a GEMM reads: the dense tensor, or the 4-bit one dequantized into scratch.dequant. */
export function denseWeight(backend: Backend, lin: Linear, scratch: LinearScratch): Tensor {
  if (lin.weight !== null) return gemmOperand(scratch, lin.weight);
  if (lin.quant === null || scratch.dequant === null) throw new TunaError("INTERNAL", `${lin.module}: neither a dense nor a 4-bit weight is loaded`);
  const w = sized(backend, scratch.dequant, [lin.outFeatures, lin.inFeatures]);
  backend.dequantize4bit(backend.view(w, [w.size]), lin.quant);
  return w;
}

/**
 * The adapter's input: x itself, or in a training forward with lora_dropout x with a fresh keep-mask applied
 * (slots.xd). The mask's two seed words come from the host RNG, so a recomputation from the same RNG state
 * (gradient checkpointing) rebuilds the very same mask; slots.dropoutApplied tells the backward which it was.
 */
export function adapterInput(backend: Backend, lora: LoraModule, x: Tensor, slots: LoraSlots, rng: Rng | null): Tensor {
  slots.dropoutApplied = false;
  if (rng === null || lora.dropout <= 0 || slots.mask === null || slots.xd === null) return x;
  slots.dropoutApplied = true;
  // A later part of a fused module (Phi-3): its slots share the first part's mask and dropped input, drawn already.
  if (lora.inputOf !== null) return slots.xd;
  const seed: [number, number] = [Math.floor(rng.uniform() * 2 ** 32), Math.floor(rng.uniform() * 2 ** 32)];
  backend.dropoutMask(slots.mask, lora.dropout, seed);
  backend.dropoutApply(slots.xd, x, slots.mask, lora.dropout);
  return slots.xd;
}
