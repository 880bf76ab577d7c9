// Which rank this process is, read from the launcher that started it: tuna's own launcher and torchrun
// (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), Kubernetes training
// operators (PET_* with the same names), SLURM srun (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
// SLURM_NODELIST) and mpirun (OMPI_COMM_WORLD_* or PMI_*). Precedence, first match wins: torchrun-style
// RANK/WORLD_SIZE, then PET_*, then OMPI_*, then PMI_*, then SLURM_* (srun sets SLURM_* around an
// mpirun or torchrun too, so it comes last).
import { TunaError } from "../util/errors.ts";

export interface ProcessPlace {
  rank: number;
  worldSize: number;
  localRank: number;
  localWorldSize: number;
  /** Where rank 0 listens (the rendezvous); undefined when the launcher does not say. */
  masterAddr: string | undefined;
  masterPort: number | undefined;
  /**
   * torchrun's agent already serves a TCPStore on MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE): ranks join it
   * as clients; otherwise rank 0 hosts the store there.
   */
  agentStore: boolean;
  /** torchrun's TORCHELASTIC_RESTART_COUNT: keys of each attempt live apart in a long-lived agent store. */
  restartCount: number;
  /** Which variables told us, for messages. */
  source: "torchrun" | "kubernetes (PET_*)" | "mpirun (OMPI_*)" | "mpirun (PMI_*)" | "slurm" | "single process";
}

type Env = Readonly<Record<string, string | undefined>>;

function intVar(env: Env, name: string, source: string, min: number): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === "") return undefined;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < min) {
    throw new TunaError("CONFIG_INVALID", `${name}=${raw} (set by ${source}) is not a whole number >= ${min}.`);
  }
  return value;
}

/** "node[01-03],gpu7" -> "node01": the first host of a SLURM node list, where rank 0 runs. */
export function firstSlurmHost(nodeList: string): string {
  const first = /^([^,[]+)(?:\[([^\]]+)\])?/.exec(nodeList.trim());
  if (first === null) throw new TunaError("CONFIG_INVALID", `SLURM_NODELIST=${nodeList} is not a node list tuna understands.`);
  const [, prefix, range] = first;
  if (range === undefined) return prefix!;
  const firstItem = range.split(",")[0]!.split("-")[0]!;
  return `${prefix!}${firstItem}`;
}

function place(env: Env, names: { rank: string; world: string; localRank?: string; localWorld?: string }, source: ProcessPlace["source"]): ProcessPlace | undefined {
  const rank = intVar(env, names.rank, source, 0);
  const worldSize = intVar(env, names.world, source, 1);
  if (rank === undefined && worldSize === undefined) return undefined;
  if (rank === undefined || worldSize === undefined) {
    throw new TunaError("CONFIG_INVALID", `${source} set ${rank === undefined ? names.world : names.rank} but not ${rank === undefined ? names.rank : names.world}; both are needed.`);
  }
  if (rank >= worldSize) throw new TunaError("CONFIG_INVALID", `${names.rank}=${rank} is not below ${names.world}=${worldSize} (set by ${source}).`);
  const localRank = names.localRank === undefined ? undefined : intVar(env, names.localRank, source, 0);
  const localWorldSize = names.localWorld === undefined ? undefined : intVar(env, names.localWorld, source, 1);
  return {
    rank,
    worldSize,
    localRank: localRank ?? rank,
    localWorldSize: localWorldSize ?? worldSize,
    masterAddr: undefined,
    masterPort: undefined,
    agentStore: false,
    restartCount: 0,
    source,
  };
}

/** The process's place in a distributed job (rank 0 of 1 when no launcher set anything). */
export function processPlace(env: Env = process.env): ProcessPlace {
  const port = (name: string, source: string): number | undefined => intVar(env, name, source, 1);
  const torch = place(env, { rank: "RANK", world: "WORLD_SIZE", localRank: "LOCAL_RANK", localWorld: "LOCAL_WORLD_SIZE" }, "torchrun");
  if (torch !== undefined) {
    const agentStore = /^(1|true)$/i.test(env["TORCHELASTIC_USE_AGENT_STORE"] ?? "");
    const restartCount = intVar(env, "TORCHELASTIC_RESTART_COUNT", "torchrun", 0) ?? 0;
    return { ...torch, masterAddr: env["MASTER_ADDR"], masterPort: port("MASTER_PORT", "torchrun"), agentStore, restartCount };
  }
  const pet = place(env, { rank: "PET_RANK", world: "PET_WORLD_SIZE", localRank: "PET_LOCAL_RANK", localWorld: "PET_NPROC_PER_NODE" }, "kubernetes (PET_*)");
  if (pet !== undefined) return { ...pet, masterAddr: env["PET_MASTER_ADDR"], masterPort: port("PET_MASTER_PORT", "kubernetes (PET_*)") };
  const ompi = place(env, { rank: "OMPI_COMM_WORLD_RANK", world: "OMPI_COMM_WORLD_SIZE", localRank: "OMPI_COMM_WORLD_LOCAL_RANK", localWorld: "OMPI_COMM_WORLD_LOCAL_SIZE" }, "mpirun (OMPI_*)");
  if (ompi !== undefined) return { ...ompi, masterAddr: env["MASTER_ADDR"], masterPort: port("MASTER_PORT", "mpirun (OMPI_*)") };
  const pmi = place(env, { rank: "PMI_RANK", world: "PMI_SIZE", localRank: "MPI_LOCALRANKID", localWorld: "MPI_LOCALNRANKS" }, "mpirun (PMI_*)");
  if (pmi !== undefined) return { ...pmi, masterAddr: env["MASTER_ADDR"], masterPort: port("MASTER_PORT", "mpirun (PMI_*)") };
  const slurm = place(env, { rank: "SLURM_PROCID", world: "SLURM_NTASKS", localRank: "SLURM_LOCALID", localWorld: "SLURM_NTASKS_PER_NODE" }, "slurm");
  if (slurm !== undefined) {
    const nodes = env["SLURM_NODELIST"] ?? env["SLURM_JOB_NODELIST"];
    return { ...slurm, masterAddr: env["MASTER_ADDR"] ?? (nodes === undefined ? undefined : firstSlurmHost(nodes)), masterPort: port("MASTER_PORT", "slurm") };
  }
  return { rank: 0, worldSize: 1, localRank: 0, localWorldSize: 1, masterAddr: undefined, masterPort: undefined, agentStore: false, restartCount: 0, source: "single process" };
}
