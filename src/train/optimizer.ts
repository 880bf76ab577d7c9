// AdamW over the flat trainable buffer (PyTorch semantics, decoupled weight decay) with HF's no-decay
// group (biases and norm weights), and gradient-norm clipping with torch's clip_grad_norm_ rule.
import type { Backend, Tensor } from "../backend/types.ts";
import type { TrainableBuffers } from "../model/trainable.ts";

export interface AdamWSettings {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export interface OptimizerState {
  /** f32 moments of the parameters in `range` only (the whole buffer unless sharded across ranks). */
  m: Tensor;
  v: Tensor;
  /** The part [lo, hi) of the flat trainable buffer this state updates (ZeRO: this rank's shard). */
  range: { lo: number; hi: number };
  /** Updates done so far (torch's `step` per parameter; the same for all here). */
  step: number;
  /** Contiguous runs of `range` with their weight decay: offsets relative to range.lo. */
  groups: { offset: number; size: number; decay: boolean }[];
}

// transformers' newest get_decay_parameter_names: names matching these never decay.
const NO_DECAY = [/bias/, /layernorm/, /rmsnorm/, /(?:^|\.)norm(?:$|\.)/, /_norm(?:$|\.)/];

export function decays(name: string): boolean {
  const lower = name.toLowerCase();
  return !NO_DECAY.some((re) => re.test(lower));
}

/** AdamW state for the parameters in `range` (default: all of them), moments zero. */
export function createOptimizerState(backend: Backend, trainable: TrainableBuffers, range = { lo: 0, hi: trainable.params.size }): OptimizerState {
  const size = Math.max(1, range.hi - range.lo);
  const m = backend.alloc("f32", [size], "adam.m");
  const v = backend.alloc("f32", [size], "adam.v");
  backend.fill(m, 0);
  backend.fill(v, 0);
  const groups: OptimizerState["groups"] = [];
  for (const e of trainable.entries) {
    // The part of this tensor inside the range, relative to range.lo.
    const start = Math.max(e.offset, range.lo);
    const end = Math.min(e.offset + e.size, range.hi);
    if (end <= start) continue;
    const decay = decays(e.name);
    const last = groups[groups.length - 1];
    if (last !== undefined && last.decay === decay && last.offset + last.size === start - range.lo) last.size += end - start;
    else groups.push({ offset: start - range.lo, size: end - start, decay });
  }
  return { m, v, range, step: 0, groups };
}

/** One AdamW update of the trainable parameters in the state's range at learning rate `lr`. */
export function optimizerStep(backend: Backend, trainable: Pick<TrainableBuffers, "params" | "grads">, state: OptimizerState, lr: number, s: AdamWSettings): void {
  adamwOver(backend, trainable.params, trainable.grads, state.range.lo, state, lr, s);
}

/** AdamW over `params`/`grads` whose element `base` is the state's range.lo (the whole buffer, or a copy of the range). */
export function adamwOver(backend: Backend, params: Tensor, grads: Tensor, base: number, state: OptimizerState, lr: number, s: AdamWSettings): void {
  state.step += 1;
  for (const g of state.groups) {
    const flat = (t: Tensor): Tensor => backend.rows(t, base + g.offset, g.size);
    const own = (t: Tensor): Tensor => backend.rows(t, g.offset, g.size);
    backend.adamwUpdate(flat(params), flat(grads), own(state.m), own(state.v), {
      lr,
      beta1: s.beta1,
      beta2: s.beta2,
      eps: s.eps,
      weightDecay: g.decay ? s.weightDecay : 0,
      step: state.step,
    });
  }
}

/**
 * torch.nn.utils.clip_grad_norm_: total L2 norm over all gradients; when maxNorm > 0 and the norm
 * exceeds it, gradients are scaled by maxNorm / (norm + 1e-6). Returns the norm before clipping.
 */
export async function clipGradients(backend: Backend, grads: Tensor, maxNorm: number): Promise<number> {
  const norm = Math.sqrt(await backend.sumSquares(grads));
  clipToNorm(backend, grads, norm, maxNorm);
  return norm;
}

/** torch's clipping rule for gradients whose total norm is `norm` (computed here, or over ranks by ZeRO-2). */
export function clipToNorm(backend: Backend, grads: Tensor, norm: number, maxNorm: number): void {
  if (maxNorm > 0 && Number.isFinite(norm)) {
    const coef = maxNorm / (norm + 1e-6);
    if (coef < 1) backend.scale(grads, coef);
  }
}
