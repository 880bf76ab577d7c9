// The one place that chooses a concrete backend. `cuda` means the GPU or a clear error; only `auto`
// may fall back to the CPU, and it says why when a GPU was there but could not be used.
import { findCudaLibraries } from "../gpu/discover.ts";
import { isTunaError } from "../util/errors.ts";
import { createCpuBackend } from "./cpu/index.ts";
import { createCudaBackend } from "./cuda/index.ts";
import type { Backend } from "./types.ts";

export type DeviceChoice = "auto" | "cpu" | "cuda";

/** Which GPU a process takes: its local rank in a job (and whether ranks may share GPUs). */
export interface GpuPlacement {
  index: number;
  shareGpus: boolean;
}

export function createBackend(device: DeviceChoice, onNotice: (message: string) => void = () => undefined, gpu: GpuPlacement = { index: 0, shareGpus: false }): Backend {
  switch (device) {
    case "cpu":
      return createCpuBackend();
    case "cuda":
      return createCudaBackend(gpu);
    case "auto": {
      // No driver library at all: a machine without an NVIDIA GPU, the common CPU case; nothing to say.
      if (!findCudaLibraries().cuda.found) return createCpuBackend();
      try {
        return createCudaBackend(gpu);
      } catch (e) {
        if (!isTunaError(e) || e.code !== "GPU") throw e;
        onNotice(`device auto: the GPU could not be used (${e.message}); training on the CPU. \`tuna doctor\` shows what was found.`);
        return createCpuBackend();
      }
    }
  }
}
