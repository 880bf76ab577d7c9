// Before starting a machine's ranks: do they fit its GPUs? One rank per GPU with NCCL, so an accelerate file
// (or tuna launch) asking for more processes per machine than the GPUs it may use is refused up front,
// naming both numbers and the ways out, instead of failing in the ranks after the rendezvous.
import { TunaError } from "../util/errors.ts";

export interface GpuFitInput {
  processesPerMachine: number;
  /** GPUs the driver sees on this machine (after CUDA_VISIBLE_DEVICES), or undefined when there is no driver. */
  gpusSeen: number | undefined;
  /** accelerate's gpu_ids ("0,1" or "all"), or undefined. */
  gpuIds: string | undefined;
  /** The device option: cpu never needs GPUs; auto and cuda train on GPUs when there are any. */
  device: "auto" | "cpu" | "cuda";
  /** TUNA_COLLECTIVE=host lets ranks share GPUs. */
  shareGpus: boolean;
}

export function checkRanksFitGpus(i: GpuFitInput): void {
  if (i.device === "cpu" || i.shareGpus || i.processesPerMachine <= 1) return;
  if (i.gpusSeen === undefined || i.gpusSeen === 0) return; // no GPU: auto trains on the CPU; cuda fails with its own message
  const ids = i.gpuIds === undefined || i.gpuIds === "all" ? undefined : i.gpuIds.split(",").filter((s) => s.trim() !== "");
  const usable = ids?.length ?? i.gpusSeen;
  if (i.processesPerMachine > usable) {
    const which = ids === undefined ? `this machine has ${i.gpusSeen} GPU${i.gpusSeen === 1 ? "" : "s"}` : `gpu_ids ${i.gpuIds} names ${usable}`;
    throw new TunaError(
      "CONFIG_INVALID",
      `${i.processesPerMachine} processes per machine need ${i.processesPerMachine} GPUs (one each, as NCCL requires), but ${which}. ` +
        `Lower num_processes (or --nproc_per_node) to ${usable}, train on the CPU with --device cpu, or set TUNA_COLLECTIVE=host to let ranks share GPUs (slow; for tests).`,
    );
  }
}
