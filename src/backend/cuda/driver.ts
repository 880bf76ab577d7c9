// The CUDA driver API (libcuda) as the GPU backend calls it: every binding declared here, every status checked
// with the call's name and the driver's own words; plus the packing of kernel arguments for cuLaunchKernel.
import koffi from "koffi";
import type { LibraryHandle } from "koffi";
import { TunaError, errorMessage } from "../../util/errors.ts";
import type { DevicePtr, KernelArg } from "./types.ts";

export type NativeFunction = ReturnType<LibraryHandle["func"]>;

/** A prototype, or alternatives tried in order (a newer `_v2` entry point first, then the old name). */
type Prototype = string | readonly string[];

export function loadLibrary(path: string): LibraryHandle {
  try {
    return koffi.load(path);
  } catch (e) {
    throw new TunaError("GPU", `could not load ${path}: ${errorMessage(e)}; run \`tuna doctor\` to see which CUDA libraries tuna finds`, {
      cause: e,
    });
  }
}

/** Binds every prototype of the table; a missing symbol means the file is not the library (or version) expected. */
export function bindAll<T extends Record<string, Prototype>>(lib: LibraryHandle, path: string, prototypes: T): { [K in keyof T]: NativeFunction } {
  const bound: Partial<Record<keyof T, NativeFunction>> = {};
  for (const [key, entry] of Object.entries(prototypes) as [keyof T, Prototype][]) {
    const alternatives: readonly string[] = typeof entry === "string" ? [entry] : entry;
    let lastError: unknown;
    for (const prototype of alternatives) {
      try {
        bound[key] = lib.func(prototype);
        break;
      } catch (e) {
        lastError = e;
      }
    }
    if (bound[key] === undefined) {
      const symbols = alternatives.map((p) => /(\w+)\s*\(/.exec(p)?.[1] ?? p).join(" or ");
      throw new TunaError("GPU", `${path} has no function ${symbols} (${errorMessage(lastError)}): it is not the expected library, or too old`, {
        cause: lastError,
      });
    }
  }
  return bound as { [K in keyof T]: NativeFunction };
}

/** koffi gives integers as a number, or a bigint for 64-bit values past 2^53. */
export function toNumber(value: unknown, what: string): number {
  if (typeof value === "number") return value;
  if (typeof value === "bigint") return Number(value);
  throw new TunaError("INTERNAL", `${what} returned ${String(value)}, not an integer`);
}

/** A device address from a uint64_t out parameter (a number below 2^53, else a bigint); 0 is a failed call. */
export function toDevicePtr(value: unknown, what: string): DevicePtr {
  if (typeof value === "bigint" && value !== 0n) return value;
  if (typeof value === "number" && Number.isSafeInteger(value) && value > 0) return BigInt(value);
  throw new TunaError("INTERNAL", `${what} returned device address ${String(value)}`);
}

/** A native handle (void *) from an out parameter; NULL is a failure of the call that should have set it. */
export function toHandle(value: unknown, what: string): bigint {
  if (typeof value === "bigint" && value !== 0n) return value;
  if (typeof value === "number" && value !== 0) return BigInt(value);
  throw new TunaError("INTERNAL", `${what} returned a null handle`);
}

/**
 * The driver entry points tuna uses (cuda.h). CUdeviceptr is uint64_t; contexts, modules, functions and events
 * are void * (koffi 3 gives them as bigint). Everything runs on the legacy default stream (NULL), so work is
 * ordered without explicit synchronization.
 */
export const DRIVER_PROTOTYPES = {
  cuGetErrorName: "int cuGetErrorName(int error, _Out_ const char **pStr)",
  cuGetErrorString: "int cuGetErrorString(int error, _Out_ const char **pStr)",
  cuInit: "int cuInit(unsigned int flags)",
  cuDeviceGetCount: "int cuDeviceGetCount(_Out_ int *count)",
  cuDeviceGet: "int cuDeviceGet(_Out_ int *device, int ordinal)",
  cuDeviceGetAttribute: "int cuDeviceGetAttribute(_Out_ int *pi, int attrib, int dev)",
  cuDeviceGetName: "int cuDeviceGetName(_Out_ uint8_t *name, int len, int dev)",
  cuDeviceTotalMem: "int cuDeviceTotalMem_v2(_Out_ size_t *bytes, int dev)",
  cuDevicePrimaryCtxRetain: "int cuDevicePrimaryCtxRetain(_Out_ void **pctx, int dev)",
  cuDevicePrimaryCtxRelease: ["int cuDevicePrimaryCtxRelease_v2(int dev)", "int cuDevicePrimaryCtxRelease(int dev)"],
  cuCtxSetCurrent: "int cuCtxSetCurrent(void *ctx)",
  cuCtxSynchronize: "int cuCtxSynchronize()",
  cuMemAlloc: "int cuMemAlloc_v2(_Out_ uint64_t *dptr, size_t bytesize)",
  cuMemFree: "int cuMemFree_v2(uint64_t dptr)",
  cuMemGetInfo: "int cuMemGetInfo_v2(_Out_ size_t *free, _Out_ size_t *total)",
  // Host buffers are passed as plain void *: koffi hands the native function the typed array's own memory.
  cuMemcpyHtoD: "int cuMemcpyHtoD_v2(uint64_t dstDevice, const void *srcHost, size_t byteCount)",
  cuMemcpyDtoH: "int cuMemcpyDtoH_v2(void *dstHost, uint64_t srcDevice, size_t byteCount)",
  cuMemcpyDtoD: "int cuMemcpyDtoD_v2(uint64_t dstDevice, uint64_t srcDevice, size_t byteCount)",
  cuMemsetD8: "int cuMemsetD8_v2(uint64_t dstDevice, uint8_t value, size_t count)",
  cuModuleLoadData: "int cuModuleLoadData(_Out_ void **module, const void *image)",
  cuModuleUnload: "int cuModuleUnload(void *hmod)",
  cuModuleGetFunction: "int cuModuleGetFunction(_Out_ void **hfunc, void *hmod, const char *name)",
  cuFuncSetAttribute: "int cuFuncSetAttribute(void *hfunc, int attrib, int value)",
  cuLaunchKernel:
    "int cuLaunchKernel(void *f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ, " +
    "unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ, unsigned int sharedMemBytes, " +
    "void *hStream, void *kernelParams, void *extra)",
  cuEventCreate: "int cuEventCreate(_Out_ void **phEvent, unsigned int flags)",
  cuEventRecord: "int cuEventRecord(void *hEvent, void *hStream)",
  cuEventSynchronize: "int cuEventSynchronize(void *hEvent)",
  // CUDA 12.8 added _v2; CUDA 13 headers map the plain name onto it. Older drivers only have the plain one.
  cuEventElapsedTime: [
    "int cuEventElapsedTime_v2(_Out_ float *pMilliseconds, void *hStart, void *hEnd)",
    "int cuEventElapsedTime(_Out_ float *pMilliseconds, void *hStart, void *hEnd)",
  ],
  cuEventDestroy: "int cuEventDestroy_v2(void *hEvent)",
} as const;

export type DriverApi = { [K in keyof typeof DRIVER_PROTOTYPES]: NativeFunction };

export const CUDA_SUCCESS = 0;
export const CUDA_ERROR_OUT_OF_MEMORY = 2;
export const CUDA_ERROR_NOT_FOUND = 500;
export const CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
export const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
export const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
export const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;

export interface CudaDriver {
  readonly path: string;
  readonly api: DriverApi;
  /** "CUDA_ERROR_OUT_OF_MEMORY (out of memory)", or "CUresult N" when the driver has no name for it. */
  readonly describe: (status: number) => string;
  /** Throws TunaError("GPU") naming `call` and the status, unless the status is CUDA_SUCCESS. */
  readonly check: (call: string, status: unknown) => void;
}

export function loadDriver(path: string): CudaDriver {
  const api = bindAll(loadLibrary(path), path, DRIVER_PROTOTYPES);
  const describe = (status: number): string => {
    const name: (string | null)[] = [null];
    const text: (string | null)[] = [null];
    const nameText = api.cuGetErrorName(status, name) === CUDA_SUCCESS && name[0] ? name[0] : `CUresult ${status}`;
    return api.cuGetErrorString(status, text) === CUDA_SUCCESS && text[0] ? `${nameText} (${text[0]})` : nameText;
  };
  const check = (call: string, status: unknown): void => {
    const code = toNumber(status, call);
    if (code !== CUDA_SUCCESS) throw new TunaError("GPU", `${call} failed: ${describe(code)}`);
  };
  return { path, api, describe, check };
}

// ---- kernel arguments -------------------------------------------------------------------------------------

/** Bytes reserved for one launch's packed arguments (the classic 4 KiB kernel parameter limit). */
export const KERNEL_ARG_BYTES = 4096;
/** At most one argument per 4 bytes fits in KERNEL_ARG_BYTES. */
export const MAX_KERNEL_ARGS = KERNEL_ARG_BYTES / 4;

const I32_MIN = -(2 ** 31);
const I32_MAX = 2 ** 31 - 1;
const U32_MAX = 2 ** 32 - 1;

function badArg(index: number, kind: string, value: unknown): TunaError {
  return new TunaError("INTERNAL", `kernel argument ${index} (${kind}) is ${String(value)}, which does not fit a ${kind}`);
}

function align(offset: number, alignment: number): number {
  return (offset + alignment - 1) & ~(alignment - 1);
}

/**
 * Writes each argument at its natural alignment (ptr/i64/u64: 8 bytes, i32/u32/f32: 4), little-endian, into
 * `view` from byte 0, and each argument's byte offset into `offsets`. Returns the bytes used.
 */
export function packKernelArgs(args: readonly KernelArg[], view: DataView, offsets: Uint32Array): number {
  if (args.length > offsets.length) throw new TunaError("INTERNAL", `${args.length} kernel arguments; at most ${offsets.length} are supported`);
  let offset = 0;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    // Checked in order of how often kernels take them.
    if ("ptr" in arg) {
      offset = align(offset, 8);
      if (offset + 8 > view.byteLength) throw overflow(view.byteLength);
      if (typeof arg.ptr !== "bigint") throw badArg(i, "ptr", arg.ptr);
      view.setBigUint64(offset, arg.ptr, true);
      offsets[i] = offset;
      offset += 8;
    } else if ("i32" in arg || "u32" in arg || "f32" in arg) {
      offset = align(offset, 4);
      if (offset + 4 > view.byteLength) throw overflow(view.byteLength);
      if ("i32" in arg) {
        if (!Number.isInteger(arg.i32) || arg.i32 < I32_MIN || arg.i32 > I32_MAX) throw badArg(i, "i32", arg.i32);
        view.setInt32(offset, arg.i32, true);
      } else if ("u32" in arg) {
        if (!Number.isInteger(arg.u32) || arg.u32 < 0 || arg.u32 > U32_MAX) throw badArg(i, "u32", arg.u32);
        view.setUint32(offset, arg.u32, true);
      } else {
        if (typeof arg.f32 !== "number") throw badArg(i, "f32", arg.f32);
        view.setFloat32(offset, arg.f32, true);
      }
      offsets[i] = offset;
      offset += 4;
    } else {
      offset = align(offset, 8);
      if (offset + 8 > view.byteLength) throw overflow(view.byteLength);
      if ("i64" in arg) view.setBigInt64(offset, toBigInt64(arg.i64, i, "i64", -(2n ** 63n), 2n ** 63n - 1n), true);
      else view.setBigUint64(offset, toBigInt64(arg.u64, i, "u64", 0n, 2n ** 64n - 1n), true);
      offsets[i] = offset;
      offset += 8;
    }
  }
  return offset;
}

function overflow(bytes: number): TunaError {
  return new TunaError("INTERNAL", `kernel arguments exceed ${bytes} bytes`);
}

function toBigInt64(value: number | bigint, index: number, kind: string, min: bigint, max: bigint): bigint {
  if (typeof value === "number" && !Number.isSafeInteger(value)) throw badArg(index, kind, value);
  const big = BigInt(value);
  if (big < min || big > max) throw badArg(index, kind, value);
  return big;
}

/**
 * Native memory for launching kernels through cuLaunchKernel's kernelParams (an array of pointers, one per
 * argument): allocated once per device and reused by every launch, since the driver copies the arguments
 * before cuLaunchKernel returns. kernelParams rather than `extra` lets the driver take each argument's size
 * from the kernel's signature, so no total-size convention can be got wrong.
 */
export interface LaunchBuffers {
  /** Pass as cuLaunchKernel's kernelParams. */
  readonly paramsPtr: bigint;
  /** Packs `args` and points kernelParams[i] at argument i. */
  pack(args: readonly KernelArg[]): void;
  free(): void;
}

export function createLaunchBuffers(): LaunchBuffers {
  const argPtr = koffi.alloc("uint8_t", KERNEL_ARG_BYTES) as unknown;
  const paramsPtr = koffi.alloc("uint64_t", MAX_KERNEL_ARGS) as unknown;
  if (typeof argPtr !== "bigint" || typeof paramsPtr !== "bigint") {
    throw new TunaError("INTERNAL", "koffi.alloc did not return a pointer (koffi 3 is required)");
  }
  const view = new DataView(koffi.view(argPtr, KERNEL_ARG_BYTES));
  const params = new BigUint64Array(koffi.view(paramsPtr, MAX_KERNEL_ARGS * 8));
  const offsets = new Uint32Array(MAX_KERNEL_ARGS);
  // The address of every 4-byte slot, made once, so a launch creates no BigInt.
  const slotAddress: bigint[] = [];
  for (let i = 0; i < KERNEL_ARG_BYTES / 4; i++) slotAddress.push(argPtr + BigInt(i * 4));
  let freed = false;
  return {
    paramsPtr,
    pack(args) {
      packKernelArgs(args, view, offsets);
      for (let i = 0; i < args.length; i++) params[i] = slotAddress[offsets[i]! >> 2]!;
    },
    free() {
      if (freed) return;
      freed = true;
      koffi.free(argPtr);
      koffi.free(paramsPtr);
    },
  };
}

/** "0x7f3a00000000", for messages. */
export function formatPtr(ptr: DevicePtr): string {
  return `0x${ptr.toString(16)}`;
}
