// How the ranks of a data-parallel job share a step, over the flat trainable buffer:
//   DDP (stage 0): gradients all-reduced, every rank updates every parameter;
//   ZeRO-1: gradients all-reduced, each rank keeps AdamW moments for (and updates) its shard only, then the
//           updated shards are all-gathered;
//   ZeRO-2: gradients reduce-scattered, so each rank holds summed gradients for its shard only; the norm
//           for clipping is the all-reduced sum of the shards' squares.
// All three take the same step (AdamW is elementwise); they differ in memory and traffic. Shards are
// equal slices of the buffer padded to a multiple of the world size. Without a collective: one rank, DDP.
import type { Backend, Tensor } from "../backend/types.ts";
import type { CudaBackend } from "../backend/cuda/index.ts";
import type { Collective } from "../dist/collective.ts";
import type { TrainableBuffers } from "../model/trainable.ts";
import { clipGradients, clipToNorm, type OptimizerState } from "./optimizer.ts";
import { planBuckets, type GradientBucket } from "./buckets.ts";

export type ShardingStage = 0 | 1 | 2;

/** AdamW moments of the flat buffer's elements [lo, hi) of `total`. */
export interface LocalMoments {
  m: Float32Array;
  v: Float32Array;
  lo: number;
  hi: number;
  total: number;
}

export interface DataParallel {
  readonly stage: ShardingStage;
  /** The part of the flat buffer whose optimizer state this rank keeps. */
  readonly range: { lo: number; hi: number };
  /** After the local backward: gradients summed over ranks (all of them, or this rank's shard). */
  reduceGradients(grads: Tensor): Promise<void>;
  /**
   * For the step's last backward: reduction in buckets, each started as soon as its layers are done
   * (`layerDone` goes to the model's backward); `finish` reduces the rest and waits for all. Undefined when
   * the reduction is not bucketed (one rank, or ZeRO-2's reduce-scatter of the whole buffer).
   */
  startBuckets(grads: Tensor): { layerDone: (layer: number) => void; finish: () => Promise<void> } | undefined;
  /** The global gradient norm before clipping; clips what this rank will use. */
  clip(grads: Tensor, maxNorm: number): Promise<number>;
  /** After the optimizer step: every rank gets every updated parameter. */
  shareParameters(params: Tensor): Promise<void>;
  /** This rank's moments (its shard, or the whole buffer when not sharded), for a checkpoint. */
  localMoments(state: OptimizerState, stateBackend?: Backend): Promise<LocalMoments>;
}

/** torch DDP's default bucket_cap_mb. */
export const DEFAULT_BUCKET_CAP_MB = 25;

export function createDataParallel(be: Backend, trainable: TrainableBuffers, collective: Collective | undefined, stage: ShardingStage, bucketCapMb = DEFAULT_BUCKET_CAP_MB): DataParallel {
  const total = trainable.total;
  const world = collective?.worldSize ?? 1;
  const rank = collective?.rank ?? 0;
  const sharded = collective !== undefined && world > 1 && stage > 0;
  const shardSize = Math.ceil(total / world);
  const range = sharded ? { lo: Math.min(total, rank * shardSize), hi: Math.min(total, (rank + 1) * shardSize) } : { lo: 0, hi: trainable.params.size };
  /** The first `count` values in a zero-padded buffer of `length`. */
  const padded = (values: Float32Array, count: number, length: number): Float32Array => {
    const out = new Float32Array(length);
    out.set(values.subarray(0, count));
    return out;
  };
  /** Every rank's [lo, hi) slice of a buffer laid end to end: the whole buffer's first `total` values. */
  const gather = async (local: Float32Array): Promise<Float32Array> => (await collective!.allGather(padded(local, local.length, shardSize))).subarray(0, total);

  return {
    stage: sharded ? stage : 0,
    range,
    async reduceGradients(grads) {
      if (collective === undefined || world === 1) return;
      const values = await be.downloadF32(grads);
      if (sharded && stage === 2) {
        const mine = await collective.reduceScatterSum(padded(values, total, shardSize * world));
        values.set(mine.subarray(0, range.hi - range.lo), range.lo);
      } else {
        await collective.allReduceSum(values);
      }
      be.upload(grads, values);
    },
    startBuckets(grads) {
      if (collective === undefined || world === 1 || (sharded && stage === 2)) return undefined;
      const buckets = planBuckets(trainable, bucketCapMb * 2 ** 20);
      // Every rank must start the all-reduces in the same order whatever its timing: the last layers' buckets
      // first, those ready only at the end last. A ready bucket waits for those before it in that order.
      const order = [...buckets.filter((b) => b.readyAfterLayer !== undefined).sort((a, b) => b.readyAfterLayer! - a.readyAfterLayer!), ...buckets.filter((b) => b.readyAfterLayer === undefined)];
      const ready = new Set<GradientBucket>();
      let next = 0;
      let chain: Promise<void> = Promise.resolve();
      // NCCL on a GPU: each bucket is summed in device memory on the communication stream, overlapping the
      // backward of the layers before it; otherwise it is staged through host memory.
      const onDevice = collective.device !== undefined && "pointerOf" in be ? { collective: collective.device, base: (be as CudaBackend).pointerOf(grads) } : undefined;
      const flush = (): void => {
        while (next < order.length && ready.has(order[next]!)) {
          const b = order[next++]!;
          if (onDevice !== undefined) {
            onDevice.collective.allReduceOnDevice(onDevice.base + BigInt(b.lo * 4), b.hi - b.lo);
            continue;
          }
          const view = be.rows(grads, b.lo, b.hi - b.lo);
          const values = be.downloadF32(view);
          chain = chain.then(async () => {
            const v = await values;
            await collective.allReduceSum(v);
            be.upload(view, v);
          });
          chain.catch(() => undefined); // awaited (and thrown) by finish(); never an unhandled rejection meanwhile
        }
      };
      return {
        layerDone(layer) {
          for (const b of buckets) if (b.readyAfterLayer === layer) ready.add(b);
          flush();
        },
        async finish() {
          for (const b of buckets) ready.add(b);
          flush();
          await chain;
          await onDevice?.collective.drain();
        },
      };
    },
    async clip(grads, maxNorm) {
      if (!(sharded && stage === 2)) return clipGradients(be, grads, maxNorm);
      // Only this rank's shard holds summed gradients: the norm is the sum of the shards' squares.
      const own = range.hi > range.lo ? be.rows(grads, range.lo, range.hi - range.lo) : undefined;
      const squares = Float32Array.of(own === undefined ? 0 : await be.sumSquares(own));
      await collective.allReduceSum(squares);
      const norm = Math.sqrt(squares[0]!);
      if (own !== undefined) clipToNorm(be, own, norm, maxNorm);
      return norm;
    },
    async shareParameters(params) {
      if (!sharded) return;
      const values = await be.downloadF32(params);
      const all = await gather(values.subarray(range.lo, range.hi));
      values.set(all);
      be.upload(params, values);
    },
    async localMoments(state, stateBackend = be) {
      const hi = Math.min(range.hi, total);
      const m = (await stateBackend.downloadF32(state.m)).subarray(0, hi - range.lo);
      const v = (await stateBackend.downloadF32(state.v)).subarray(0, hi - range.lo);
      return { m, v, lo: range.lo, hi, total };
    },
  };
}
