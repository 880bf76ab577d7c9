// DoRA (PEFT use_dora, Liu et al. 2024) on one linear layer, as PEFT's DoraLinearLayer computes it:
//   g = magnitude / ||W + s B A||_row   (the norm detached: a constant for the backward, paper section 4.3)
//   y = W x + b + (g - 1) * (W xd) + g * s B A xd        (xd = dropout(x); without dropout y = g (W x + s B A x) + b)
// The two (N, out) terms W xd and s B A xd are kept in the layer's slots for the backward, as autograd keeps them.
import type { Backend, Tensor } from "../../backend/types.ts";
import type { Rng } from "../../util/random.ts";
import { TunaError } from "../../util/errors.ts";
import { PROJECTIONS } from "../../hf/weights.ts";
import type { LoraSlots } from "./activations.ts";
import { loraBackward, type LinearBackwardScratch } from "./linear.ts";
import { adapterInput, denseWeight, gemmOperand, sized, type LinearScratch } from "./linear-operands.ts";
import type { DoraModule, Linear, CausalLmParams, LoraModule } from "./params.ts";
import type { LayerResidency } from "../types.ts";

function doraSlots(backend: Backend, lin: Linear, slots: LoraSlots, N: number): { base: Tensor; lora: Tensor } {
  if (slots.dora === null) throw new TunaError("INTERNAL", `${lin.module}: DoRA needs its activation slots`);
  return { base: sized(backend, slots.dora.base, [N, lin.outFeatures]), lora: sized(backend, slots.dora.lora, [N, lin.outFeatures]) };
}

/**
 * norms = row norms of W + s B A, built in scratch.dequant. A 4-bit W is still there from the forward's GEMMs
 * (denseWeight dequantized it into the same scratch); a dense W is copied in.
 */
function computeNorms(backend: Backend, lin: Linear, lora: LoraModule, dora: DoraModule, scratch: LinearScratch): void {
  if (scratch.dequant === null) throw new TunaError("INTERNAL", `${lin.module}: DoRA needs the weight scratch`);
  const wc = sized(backend, scratch.dequant, [lin.outFeatures, lin.inFeatures]);
  if (lin.weight !== null) backend.copy(wc, lin.weight);
  backend.matmul(wc, gemmOperand(scratch, lora.B), gemmOperand(scratch, lora.A), { alpha: lora.scale, accumulate: true });
  backend.rowNorms(dora.norms, wc);
}

export function doraLinearForward(
  backend: Backend,
  lin: Linear,
  lora: LoraModule,
  dora: DoraModule,
  y: Tensor,
  x: Tensor,
  slots: LoraSlots,
  scratch: LinearScratch,
  rng: Rng | null,
): void {
  const N = x.shape[0]!;
  const w = denseWeight(backend, lin, scratch);
  const xd = adapterInput(backend, lora, x, slots, rng);
  const { base, lora: adapted } = doraSlots(backend, lin, slots, N);
  backend.matmul(base, xd, w, { transB: true });
  if (xd === x) backend.copy(y, base);
  else backend.matmul(y, x, w, { transB: true });
  const xa = sized(backend, slots.xa, [N, lora.rank]);
  backend.matmul(xa, xd, gemmOperand(scratch, lora.A), { transB: true });
  backend.matmul(adapted, xa, gemmOperand(scratch, lora.B), { transB: true, alpha: lora.scale });
  // After the GEMMs that read W: the norms overwrite the weight scratch.
  if (scratch.reuseDoraNorms !== true) computeNorms(backend, lin, lora, dora, scratch);
  backend.doraForward(y, base, adapted, dora.magnitude, dora.norms);
  if (lin.bias !== null) backend.addBias(y, lin.bias);
}

export function doraLinearBackward(
  backend: Backend,
  lin: Linear,
  lora: LoraModule,
  dora: DoraModule,
  dx: Tensor,
  dy: Tensor,
  x: Tensor,
  slots: LoraSlots,
  scratch: LinearBackwardScratch,
  accumulate: boolean,
): void {
  const N = x.shape[0]!;
  if (lin.dbias !== null) backend.biasBackward(lin.dbias, dy);
  const { base, lora: adapted } = doraSlots(backend, lin, slots, N);
  const dropout = slots.dropoutApplied;
  // dz = g * dy replaces the adapter's output, dbase = (g - 1) * dy the base term's (with dropout only).
  const dz = adapted;
  backend.doraBackward(dora.dMagnitude, dz, dropout ? base : null, dy, base, adapted, dora.magnitude, dora.norms);
  const w = denseWeight(backend, lin, scratch);
  if (!dropout) {
    // y = g (W x + s B A x): the whole input gradient is that of dz.
    backend.matmul(dx, dz, w, { accumulate });
    loraBackward(backend, lin, dz, dx, x, slots, scratch);
  } else {
    backend.matmul(dx, dy, w, { accumulate });
    loraBackward(backend, lin, dz, dx, x, slots, scratch, { dbase: base, weight: w });
  }
}

/**
 * DoRA's magnitudes at creation: the row norms of the base weights (PEFT's ||W + s B A|| with B = 0), written
 * into the trainable buffer. Sharded layers are gathered one at a time, so every rank of the group calls this.
 */
export async function initDoraMagnitudes(backend: Backend, params: CausalLmParams, scratch: LinearScratch, residency: LayerResidency | null): Promise<void> {
  for (let l = 0; l < params.layers.length; l++) {
    const layer = params.layers[l]!;
    if (!PROJECTIONS.some((p) => layer.proj[p].lora?.dora != null)) continue;
    await residency?.acquire(l, l + 1 < params.layers.length ? l + 1 : undefined);
    for (const p of PROJECTIONS) {
      const lin = layer.proj[p];
      const dora = lin.lora?.dora;
      if (dora != null) backend.rowNorms(dora.magnitude, denseWeight(backend, lin, scratch));
    }
    residency?.release(l);
  }
}
