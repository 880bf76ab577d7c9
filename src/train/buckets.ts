// Gradient buckets for data parallelism (torch DDP's bucket_cap_mb): contiguous ranges of the flat gradient
// buffer of at most `capBytes`, each ready once every layer it covers has finished its backward (layers finish
// from the last to the first; tensors outside the layers, embeddings, norm, head, are ready at the end). A
// bucket's all-reduce starts when it is ready, so communication runs while earlier layers still compute.
import type { TrainableBuffers } from "../model/trainable.ts";

export interface GradientBucket {
  lo: number;
  hi: number;
  /** The layer whose completion makes the bucket ready (the lowest it covers); undefined: ready at the end. */
  readyAfterLayer: number | undefined;
}

const LAYER = /(?:^|\.)layers\.(\d+)\./;

export function layerOf(name: string): number | undefined {
  const m = LAYER.exec(name);
  return m === null ? undefined : Number(m[1]);
}

/** Buckets over the buffer, built from its end (where the last layers' tensors are) towards the start. */
export function planBuckets(trainable: Pick<TrainableBuffers, "entries" | "total">, capBytes: number): GradientBucket[] {
  const capElements = Math.max(1, Math.floor(capBytes / 4));
  const buckets: GradientBucket[] = [];
  let current: { lo: number; hi: number; layers: (number | undefined)[] } | undefined;
  const close = (): void => {
    if (current === undefined) return;
    const end = current.layers.some((l) => l === undefined);
    buckets.push({ lo: current.lo, hi: current.hi, readyAfterLayer: end ? undefined : Math.min(...(current.layers as number[])) });
    current = undefined;
  };
  for (const e of [...trainable.entries].reverse()) {
    const layer = layerOf(e.name);
    // A tensor larger than the cap is cut into pieces of the cap; pieces of one tensor share its layer.
    let hi = e.offset + e.size;
    while (hi > e.offset) {
      if (current !== undefined && current.hi - current.lo >= capElements) close();
      current ??= { lo: hi, hi, layers: [] };
      const room = capElements - (current.hi - current.lo);
      const lo = Math.max(e.offset, hi - room);
      current.lo = lo;
      current.layers.push(layer);
      hi = lo;
    }
  }
  close();
  return buckets;
}
