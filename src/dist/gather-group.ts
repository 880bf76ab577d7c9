// The ranks a ZeRO-3 / FSDP parameter is sharded over, as an all-gather of their shares: every rank of the job
// (FULL_SHARD, ZeRO stage 3), or the ranks of this machine (HYBRID_SHARD: shards within a node, replicas across
// nodes). The machine's group gathers over the job's collective and keeps its own machine's part, so it needs
// no second communicator; the traffic across machines is the job's all-gather (a sub-communicator per machine
// would keep it inside each machine, NCCL's ncclCommSplit, not done yet).
import type { Collective } from "./collective.ts";
import type { ProcessPlace } from "./launch-env.ts";
import { TunaError } from "../util/errors.ts";

export interface GatherGroup {
  /** This rank's place in the group, and the group's size. */
  readonly index: number;
  readonly size: number;
  /** The group's equal-length buffers end to end, in group order. */
  allGather(local: Float32Array): Promise<Float32Array>;
}

export function worldGroup(collective: Collective): GatherGroup {
  return { index: collective.rank, size: collective.worldSize, allGather: (local) => collective.allGather(local) };
}

/**
 * The ranks of this machine. They must be numbered consecutively, local rank 0 first (as torchrun, tuna launch,
 * accelerate and SLURM's block distribution do); every rank checks that of every other before any sharding.
 */
export async function machineGroup(collective: Collective, place: ProcessPlace): Promise<GatherGroup> {
  const all = await collective.allGather(Float32Array.of(place.localRank, place.localWorldSize));
  const size = place.localWorldSize;
  const start = place.rank - place.localRank;
  for (let r = 0; r < collective.worldSize; r++) {
    const local = all[2 * r]!;
    const localWorld = all[2 * r + 1]!;
    const first = r - local;
    if (localWorld !== size || first % size !== 0 || local < 0 || local >= size) {
      throw new TunaError(
        "DIST",
        `HYBRID_SHARD shards within each machine, which needs every machine's ranks numbered consecutively with the same ` +
          `number a machine; rank ${r} has local rank ${local} of ${localWorld} (this rank: ${place.localRank} of ${size}). ` +
          "Launch with one process per GPU on every machine (torchrun, tuna launch, or SLURM's block distribution), or use FULL_SHARD.",
      );
    }
  }
  return {
    index: place.localRank,
    size,
    allGather: async (local) => (await collective.allGather(local)).subarray(start * local.length, (start + size) * local.length),
  };
}
