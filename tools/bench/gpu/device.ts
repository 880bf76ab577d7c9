// The benchmark's view of a backend: the Backend itself plus the clock, memory and timing hooks that
// differ between CUDA (synchronize, allocator statistics, event-timed regions) and the CPU reference.
import { performance } from "node:perf_hooks";
import { createCpuBackend } from "../../../src/backend/cpu/index.ts";
import { createCudaBackend } from "../../../src/backend/cuda/index.ts";
import type { Backend } from "../../../src/backend/types.ts";
import type { MemoryStats } from "../../../src/backend/cuda/types.ts";

export type BenchDeviceKind = "cpu" | "cuda";

/** The CUDA allocator's statistics. */
export type BenchMemory = MemoryStats;

export interface BenchDevice {
  readonly kind: BenchDeviceKind;
  readonly backend: Backend;
  /** "NVIDIA H200 (sm_90, 132 SMs)" or "CPU (4 threads)". */
  readonly description: string;
  /** Waits for all enqueued work (no-op on the CPU, whose ops are synchronous). */
  synchronize(): void;
  /** Allocator statistics, or null where the backend keeps none (CPU). */
  memory(): BenchMemory | null;
  resetPeak(): void;
  /** Milliseconds the device spent on the work `body` enqueues (CUDA events; wall time on the CPU). */
  timeOp(body: () => void): number;
  /** Releases everything the backend holds; the device is unusable afterwards. */
  dispose(): void;
}

export function openBenchDevice(kind: BenchDeviceKind, cpuThreads?: number, gpuIndex = 0): BenchDevice {
  if (kind === "cuda") {
    const be = createCudaBackend({ index: gpuIndex });
    const dev = be.device;
    return {
      kind,
      backend: be,
      description: `${dev.name} (${dev.arch}, ${dev.multiprocessorCount} SMs)`,
      synchronize: () => {
        be.synchronize();
      },
      memory: () => be.memoryStats(),
      resetPeak: () => {
        dev.resetPeak();
      },
      timeOp: (body) => dev.timed(body),
      dispose: () => {
        be.dispose();
      },
    };
  }
  const be = createCpuBackend(cpuThreads === undefined ? {} : { threads: cpuThreads });
  return {
    kind,
    backend: be,
    description: `CPU (${cpuThreads ?? "default"} threads)`,
    synchronize: () => undefined,
    memory: () => null,
    resetPeak: () => undefined,
    timeOp: (body) => {
      const t0 = performance.now();
      body();
      return performance.now() - t0;
    },
    dispose: () => undefined,
  };
}

export const GIB = 2 ** 30;
