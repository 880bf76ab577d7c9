// The one place that chooses a concrete backend. CUDA arrives with its own issue; asking for it
// now is a clear error, and `auto` falls back to the CPU only because the user allowed it.
import { TunaError } from "../util/errors.ts";
import { createCpuBackend } from "./cpu/index.ts";
import type { Backend } from "./types.ts";

export type DeviceChoice = "auto" | "cpu" | "cuda";

export function createBackend(device: DeviceChoice): Backend {
  switch (device) {
    case "cpu":
    case "auto":
      return createCpuBackend();
    case "cuda":
      throw new TunaError(
        "GPU",
        "the CUDA backend is not available in this version of tuna; use --device cpu (or auto). `tuna doctor` shows what GPU support was found.",
      );
  }
}
