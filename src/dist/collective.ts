// The one collective interface the trainer sees: all-reduce, reduce-scatter, all-gather, broadcast and
// barrier over host float32 buffers, every call numbered so ranks that disagree on the sequence of
// collectives fail with both calls named. Implementations: one rank (the identity, below), the host
// transport (src/dist/host, the CPU reference that CI runs with real processes); NCCL is the next one.
import type { TunaError } from "../util/errors.ts";

export type CollectiveOp = "allReduce" | "reduceScatter" | "allGather" | "broadcast" | "barrier";

/**
 * Collectives on device memory, enqueued on a communication stream so they run while the compute stream goes
 * on (NCCL on GPUs). Data parallelism uses it for gradient buckets when the collective offers it.
 */
export interface DeviceCollective {
  /** Sums `count` float32 at device address `ptr` over the ranks, in place, after the compute work enqueued so far. */
  allReduceOnDevice(ptr: bigint, count: number): void;
  /** The compute stream waits for everything enqueued above; resolves once it has completed (bounded, errors as for every collective). */
  drain(): Promise<void>;
}

export interface Collective {
  readonly rank: number;
  readonly worldSize: number;
  /** Present where the collective can work on device memory on its own stream (NCCL). */
  readonly device?: DeviceCollective;
  /**
   * In place: every rank ends with the elementwise sum over ranks (summed in rank order, in float64).
   * `waitMs` replaces the collective's bound for this call (a checkpoint that one rank writes for long).
   */
  allReduceSum(data: Float32Array, options?: { waitMs?: number }): Promise<void>;
  /**
   * Returns this rank's shard of the elementwise sum: elements [rank * n / W, (rank + 1) * n / W) of the
   * length-n input (n must be a multiple of the world size).
   */
  reduceScatterSum(data: Float32Array): Promise<Float32Array>;
  /** The ranks' equal-length buffers laid end to end in rank order. */
  allGather(local: Float32Array): Promise<Float32Array>;
  /** In place: every rank ends with `root`'s bytes. */
  broadcast(data: Uint8Array, root: number): Promise<void>;
  barrier(): Promise<void>;
  /**
   * Stops the group at once because of `reason` (a rank stopped answering, the rendezvous store went away):
   * a collective in flight and every later one fail with it. Never blocks.
   */
  abort(reason: TunaError): void;
  /** Leaves the group; later calls fail. */
  close(): Promise<void>;
}

/** A world of one: every collective is the identity. */
export function singleProcessCollective(): Collective {
  return {
    rank: 0,
    worldSize: 1,
    allReduceSum: () => Promise.resolve(),
    reduceScatterSum: (data) => Promise.resolve(data.slice()),
    allGather: (local) => Promise.resolve(local.slice()),
    broadcast: () => Promise.resolve(),
    barrier: () => Promise.resolve(),
    abort: () => undefined,
    close: () => Promise.resolve(),
  };
}

/**
 * Sums each value over the ranks exactly as float64 (the collectives carry float32): every rank's values are
 * split into a float32 high part and the float32 rest, all-gathered (no arithmetic in transit), and summed
 * here in rank order, so every rank gets the same sum to ~1e-14 relative (loss totals, token counts).
 */
export async function sumOverRanks(collective: Collective, values: readonly number[]): Promise<number[]> {
  const n = values.length;
  const local = new Float32Array(2 * n);
  values.forEach((v, i) => {
    const hi = Math.fround(v);
    local[2 * i] = hi;
    local[2 * i + 1] = v - hi;
  });
  const all = await collective.allGather(local);
  const sums = new Array<number>(n).fill(0);
  for (let r = 0; r < collective.worldSize; r++) {
    for (let i = 0; i < n; i++) sums[i]! += all[r * 2 * n + 2 * i]! + all[r * 2 * n + 2 * i + 1]!;
  }
  return sums;
}
