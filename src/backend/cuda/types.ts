// The contract inside the CUDA backend: what the runtime (driver, NVRTC, cuBLASLt, allocator) offers
// to the op files, and how the op files see a tensor. The backend (index.ts) maps the public Tensor
// handles of ../types.ts onto DeviceTensor and calls the op wrappers in ops/.
import type { DType, DeviceMemoryStats } from "../types.ts";

/** A CUDA device address (CUdeviceptr, 64-bit). 0n is the null pointer. */
export type DevicePtr = bigint;

/** A tensor as the op wrappers see it: the address of its first element, its dtype and shape. */
export interface DeviceTensor {
  readonly ptr: DevicePtr;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** Number of elements. */
  readonly size: number;
}

export { DTYPE_BYTES } from "../types.ts";

/**
 * The dtype code kernels receive for a float tensor argument (see kernels/common.cuh: ld/st):
 * 0 = f32, 1 = bf16, 2 = f16. Integer tensors have fixed types in each kernel's signature.
 */
export const FLOAT_DTYPE_CODE: Readonly<Partial<Record<DType, number>>> = { f32: 0, bf16: 1, f16: 2 };

/**
 * One kernel argument, in the order of the kernel's C parameter list. Each is packed with its
 * natural size and alignment (ptr/u64/i64: 8 bytes, i32/u32/f32: 4 bytes).
 */
export type KernelArg =
  | { ptr: DevicePtr }
  | { i32: number }
  | { u32: number }
  | { i64: number | bigint }
  | { u64: number | bigint }
  | { f32: number };

export type Dim3 = readonly [number, number, number];

export interface CudaFunction {
  readonly name: string;
  /** Enqueues the kernel on the device's stream (asynchronous). */
  launch(grid: Dim3, block: Dim3, sharedBytes: number, args: readonly KernelArg[]): void;
  /** Raises the dynamic shared memory limit (needed above 48 KiB). */
  setMaxDynamicSharedBytes(bytes: number): void;
}

export interface CudaModule {
  /** An `extern "C" __global__` function of the module; a missing name is a TunaError("INTERNAL"). */
  fn(name: string): CudaFunction;
}

export type GemmDtype = "f32" | "bf16" | "f16";

/**
 * One GEMM in row-major terms (as the CPU backend's matmul): D (M, N) = alpha * op(A) (M, K) @ op(B) (K, N)
 * + beta * D. transA: A is stored (K, M); transB: B is stored (N, K). Accumulation is always f32.
 * Supported dtype combinations: A and B of one dtype (bf16, f16 or f32); D of that dtype or f32.
 */
export interface GemmCall {
  m: number;
  n: number;
  k: number;
  a: DeviceTensor;
  b: DeviceTensor;
  d: DeviceTensor;
  transA: boolean;
  transB: boolean;
  alpha: number;
  /** 0 overwrites D, 1 accumulates into it. */
  beta: 0 | 1;
}

/** The contract's DeviceMemoryStats plus the allocator's reserved peak. */
export interface MemoryStats extends DeviceMemoryStats {
  peakReservedBytes: number;
}

export interface CudaDevice {
  readonly index: number;
  /** The GPU's name ("NVIDIA H200") and architecture ("sm_90"). */
  readonly name: string;
  readonly arch: string;
  readonly multiprocessorCount: number;

  /**
   * Device memory from the caching allocator (no driver call in steady state). Sizes are rounded up;
   * out of memory is a TunaError("GPU") that says how much was asked, how much is in use and what lowers it.
   * `what` names the allocation in that message.
   */
  alloc(bytes: number, what: string): DevicePtr;
  /** Returns a block to the allocator's cache (it may be reused by later alloc calls on the stream). */
  free(ptr: DevicePtr): void;
  memoryStats(): MemoryStats;
  resetPeak(): void;

  /** Stream-ordered copies (the host side is synchronized before returning for downloads). */
  upload(dst: DevicePtr, src: ArrayBufferView): void;
  download(dst: ArrayBufferView, src: DevicePtr): void;
  copy(dst: DevicePtr, src: DevicePtr, bytes: number): void;
  /** Sets `bytes` bytes to the byte value. */
  memset(dst: DevicePtr, value: number, bytes: number): void;

  /**
   * The module compiled from src/backend/cuda/kernels/<file> (a .cu file; kernels/*.cuh files may be
   * #included). Compiled by NVRTC for this GPU's arch on first use and cached on disk by a hash of
   * source, included headers, options, NVRTC version and arch; a compile error names the file and
   * shows NVRTC's log.
   */
  module(file: string): CudaModule;

  /** cuBLASLt GEMM on the device's stream (heuristic cached per shape/dtype/transpose, 32 MiB workspace). */
  gemm(call: GemmCall): void;

  /** Waits until all enqueued work has finished; an asynchronous kernel fault surfaces here as TunaError("GPU"). */
  synchronize(): void;

  /** Event-timed region on the stream, in milliseconds (for benchmarks and the step-time breakdown). */
  timed(body: () => void): number;

  /** Releases the context, the stream, every cached block and library handle. */
  dispose(): void;
}
