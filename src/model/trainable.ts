// The trainable parameters of any model family as named views of ONE flat f32 buffer, with the gradient
// buffer beside it: zeroing, clipping, all-reduce, sharding and AdamW are then one loop (or slice) each.
import type { Backend, Tensor } from "../backend/types.ts";
import { TunaError } from "../util/errors.ts";
import { numel } from "../util/shape.ts";

export interface TrainableEntry {
  /** PEFT key for LoRA tensors, HF name for full fine-tuning. */
  name: string;
  shape: number[];
  offset: number;
  size: number;
}

/** One flat f32 allocation for the trainable parameters and one for their gradients. */
export interface TrainableBuffers {
  entries: TrainableEntry[];
  total: number;
  params: Tensor;
  grads: Tensor;
  byName: Map<string, { param: Tensor; grad: Tensor; entry: TrainableEntry }>;
}

export function createTrainableBuffers(backend: Backend, specs: readonly { name: string; shape: number[] }[]): TrainableBuffers {
  const entries: TrainableEntry[] = [];
  let total = 0;
  for (const s of specs) {
    const size = numel(s.shape);
    entries.push({ name: s.name, shape: s.shape, offset: total, size });
    total += size;
  }
  const params = backend.alloc("f32", [Math.max(total, 1)], "trainable.params");
  const grads = backend.alloc("f32", [Math.max(total, 1)], "trainable.grads");
  backend.fill(params, 0);
  backend.fill(grads, 0);
  const byName = new Map<string, { param: Tensor; grad: Tensor; entry: TrainableEntry }>();
  for (const e of entries) {
    byName.set(e.name, {
      entry: e,
      param: backend.view(backend.rows(params, e.offset, e.size), e.shape),
      grad: backend.view(backend.rows(grads, e.offset, e.size), e.shape),
    });
  }
  return { entries, total, params, grads, byName };
}

export function trainableView(t: TrainableBuffers, name: string): { param: Tensor; grad: Tensor } {
  const found = t.byName.get(name);
  if (found === undefined) throw new TunaError("INTERNAL", `no trainable tensor named ${name}`);
  return found;
}
