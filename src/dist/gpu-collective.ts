// Which collective a rank's training uses: on the CPU backend the host transport the job joined with; on GPUs
// NCCL (one communicator per job, its unique id shared through the rendezvous store), unless TUNA_COLLECTIVE=host
// asks for the host transport (ranks sharing one GPU, where NCCL refuses two ranks per device).
// NVLink multicast stays off (NCCL_NVLS_ENABLE=0) unless the user set it: it can take shared GPUs out of service.
import type { Backend } from "../backend/types.ts";
import type { CudaBackend } from "../backend/cuda/index.ts";
import { findCudaLibraries } from "../gpu/discover.ts";
import { TunaError } from "../util/errors.ts";
import type { Collective } from "./collective.ts";
import type { JobMembership } from "./job.ts";
import type { ProcessPlace } from "./launch-env.ts";
import { createNcclCollective, driverStreams, legacyStreamIdle } from "./nccl/collective.ts";
import { loadNccl } from "./nccl/library.ts";

export type Transport = "nccl" | "host";

/** The transport TUNA_COLLECTIVE asks for, or undefined for the default (NCCL on GPUs, host on the CPU). */
export function requestedTransport(env: NodeJS.ProcessEnv = process.env): Transport | undefined {
  const raw = env["TUNA_COLLECTIVE"];
  if (raw === undefined || raw === "") return undefined;
  if (raw === "nccl" || raw === "host") return raw;
  throw new TunaError("CONFIG_INVALID", `TUNA_COLLECTIVE=${raw}: use nccl (GPUs, the default there) or host (the host transport; ranks may share a GPU).`);
}

/** Variables every rank of a GPU job gets unless the user set them: NVLink multicast off. */
export const GPU_JOB_DEFAULTS: Readonly<Record<string, string>> = { NCCL_NVLS_ENABLE: "0", TORCH_SYMM_MEM_DISABLE_MULTICAST: "1", NVSHMEM_DISABLE_NVLS: "1" };

export async function collectiveForBackend(job: JobMembership, place: ProcessPlace, backend: Backend, timeoutMs: number): Promise<Collective> {
  const transport = requestedTransport();
  if (backend.name !== "cuda" || transport === "host") return job.collective;
  const libraries = findCudaLibraries();
  if (!libraries.nccl.found || libraries.nccl.path === undefined) {
    throw new TunaError("GPU", `a job of ${place.worldSize} GPU processes needs NCCL, which was not found (looked in ${libraries.nccl.searched.join(", ")}): install it (e.g. pip install nvidia-nccl-cu12), or set TUNA_COLLECTIVE=host. \`tuna doctor\` shows what tuna finds.`);
  }
  for (const [name, value] of Object.entries(GPU_JOB_DEFAULTS)) process.env[name] ??= value;
  const nccl = loadNccl(libraries.nccl.path);
  const key = job.rendezvous.key("nccl-unique-id");
  let uniqueId: Uint8Array;
  if (place.rank === 0) {
    uniqueId = nccl.newUniqueId();
    await job.rendezvous.store.set(key, uniqueId);
  } else {
    uniqueId = new Uint8Array(await job.rendezvous.store.get(key));
  }
  const device = (backend as CudaBackend).device;
  const collective = await createNcclCollective({
    nccl,
    device,
    streamIdle: legacyStreamIdle(libraries.cuda.path ?? "libcuda.so.1"),
    rank: place.rank,
    worldSize: place.worldSize,
    uniqueId,
    timeoutMs,
    // Gradient buckets on a communication stream, overlapping the backward; TUNA_NCCL_OVERLAP=0 stages them
    // through host memory instead.
    ...(process.env["TUNA_NCCL_OVERLAP"] === "0" ? {} : { streams: driverStreams(libraries.cuda.path ?? "libcuda.so.1") }),
  });
  job.adopt(collective);
  return collective;
}
