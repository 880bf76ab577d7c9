// Opens one GPU as a CudaDevice: the driver's primary context, the caching allocator, kernel modules from NVRTC
// (through the on-disk cache), cuBLASLt GEMMs and event timing, all on the legacy default stream.
import { TunaError, errorMessage, isTunaError } from "../../util/errors.ts";
import { findCudaLibraries, type LibraryResult, type LibrarySearchOptions } from "../../gpu/discover.ts";
import { createCachingAllocator, type CachingAllocator } from "./allocator.ts";
import { GEMM_WORKSPACE_BYTES, openCublasLt, type CublasLt } from "./cublaslt.ts";
import {
  CUDA_ERROR_NOT_FOUND,
  CUDA_ERROR_OUT_OF_MEMORY,
  CUDA_SUCCESS,
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
  CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
  CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
  createLaunchBuffers,
  formatPtr,
  loadDriver,
  toDevicePtr,
  toHandle,
  toNumber,
  type CudaDriver,
} from "./driver.ts";
import { defaultKernelCacheDir, defaultKernelsDir, loadKernelBinary } from "./kernel-cache.ts";
import { checkArchSupported, findCudaIncludeDir, gpuArch, loadNvrtc, nvrtcOptions, type Nvrtc } from "./nvrtc.ts";
import type { CudaDevice, CudaFunction, CudaModule, DevicePtr, Dim3, KernelArg } from "./types.ts";
import { bytesOf } from "../../util/bytes.ts";

export interface OpenCudaDeviceOptions {
  index?: number;
  /**
   * Several processes of one machine sharing its GPUs (a job with more ranks per machine than GPUs, through
   * the host transport): GPU index modulo the number of GPUs instead of an error.
   */
  shareGpus?: boolean;
  kernelCacheDir?: string;
  /** The folder of .cu/.cuh files (tests); tuna's own kernels by default. */
  kernelsDir?: string;
  /** Where to look for libcuda, NVRTC and cuBLASLt (tests); also the environment the CUDA headers are searched with. */
  librarySearch?: LibrarySearchOptions;
}

/** A CudaDevice plus what tests need: a module from source text, bypassing the kernel files and the cache. */
export interface CudaRuntimeDevice extends CudaDevice {
  readonly computeCapability: { major: number; minor: number };
  moduleFromSource(source: string, name: string): CudaModule;
}

const DOCTOR_HINT = "run `tuna doctor` to see what tuna finds";

/** The context this thread last made current: a device re-binds its own only when another device was used since. */
let currentContext: bigint | undefined;

function requireLibrary(lib: LibraryResult, what: string, fix: string): string {
  if (lib.found && lib.path !== undefined) return lib.path;
  throw new TunaError("GPU", `${lib.name} (${what}) was not found in ${lib.searched.join(", ")}: ${fix}; ${DOCTOR_HINT}`);
}

function dimText(d: Dim3): string {
  return `[${d.join(", ")}]`;
}

export function openCudaDevice(options: OpenCudaDeviceOptions = {}): CudaRuntimeDevice {
  const requested = options.index ?? 0;
  const libraries = findCudaLibraries(options.librarySearch ?? {});
  const driverPath = requireLibrary(libraries.cuda, "the NVIDIA driver", "install the NVIDIA driver, or run on a machine with an NVIDIA GPU");
  const driver: CudaDriver = loadDriver(driverPath);
  const { api, check } = driver;

  const initStatus = toNumber(api.cuInit(0), "cuInit");
  if (initStatus !== CUDA_SUCCESS) throw new TunaError("GPU", `the NVIDIA driver at ${driverPath} found no usable GPU: cuInit failed: ${driver.describe(initStatus)}; ${DOCTOR_HINT}`);
  const count = [0];
  check("cuDeviceGetCount", api.cuDeviceGetCount(count));
  const deviceCount = count[0] ?? 0;
  const index = options.shareGpus === true && deviceCount > 0 ? requested % deviceCount : requested;
  if (!Number.isInteger(index) || index < 0 || index >= deviceCount) {
    const job = process.env.LOCAL_RANK === undefined ? "" : ` This process is local rank ${process.env.LOCAL_RANK} of a job, which takes GPU ${index}: start at most ${deviceCount} process${deviceCount === 1 ? "" : "es"} per machine (one per GPU), or set TUNA_COLLECTIVE=host to share GPUs through the host transport (slow; for tests).`;
    throw new TunaError("GPU", `GPU ${index} does not exist: the driver sees ${deviceCount} GPU${deviceCount === 1 ? "" : "s"} (CUDA_VISIBLE_DEVICES=${process.env.CUDA_VISIBLE_DEVICES ?? "unset"}).${job} ${DOCTOR_HINT}`);
  }
  const deviceOut = [0];
  check(`cuDeviceGet(${index})`, api.cuDeviceGet(deviceOut, index));
  const dev = deviceOut[0] ?? 0;
  const nameBuffer = Buffer.alloc(256);
  check(`cuDeviceGetName(GPU ${index})`, api.cuDeviceGetName(nameBuffer, nameBuffer.length, dev));
  const nameEnd = nameBuffer.indexOf(0);
  const name = nameBuffer.toString("utf8", 0, nameEnd === -1 ? nameBuffer.length : nameEnd);
  const attribute = (attrib: number, label: string): number => {
    const value = [0];
    check(`cuDeviceGetAttribute(${label}, GPU ${index})`, api.cuDeviceGetAttribute(value, attrib, dev));
    return value[0] ?? 0;
  };
  const computeCapability = {
    major: attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, "COMPUTE_CAPABILITY_MAJOR"),
    minor: attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, "COMPUTE_CAPABILITY_MINOR"),
  };
  const multiprocessorCount = attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "MULTIPROCESSOR_COUNT");
  const totalOut: unknown[] = [0];
  check(`cuDeviceTotalMem_v2(GPU ${index})`, api.cuDeviceTotalMem(totalOut, dev));
  const totalBytes = toNumber(totalOut[0], "cuDeviceTotalMem_v2");
  const arch = gpuArch(computeCapability);

  const ctxOut: unknown[] = [null];
  check(`cuDevicePrimaryCtxRetain(GPU ${index})`, api.cuDevicePrimaryCtxRetain(ctxOut, dev));
  const ctx = toHandle(ctxOut[0], "cuDevicePrimaryCtxRetain");
  check(`cuCtxSetCurrent(GPU ${index})`, api.cuCtxSetCurrent(ctx));
  currentContext = ctx;

  const allocator: CachingAllocator = createCachingAllocator({
    totalBytes,
    raw: {
      alloc(bytes) {
        const out: unknown[] = [0];
        const status = toNumber(api.cuMemAlloc(out, bytes), "cuMemAlloc_v2");
        if (status === CUDA_ERROR_OUT_OF_MEMORY) return null;
        check(`cuMemAlloc_v2(${bytes} bytes)`, status);
        return toDevicePtr(out[0], "cuMemAlloc_v2");
      },
      free(ptr) {
        check(`cuMemFree_v2(${formatPtr(ptr)})`, api.cuMemFree(ptr));
      },
    },
    deviceFreeBytes() {
      const free: unknown[] = [0];
      const total: unknown[] = [0];
      return toNumber(api.cuMemGetInfo(free, total), "cuMemGetInfo_v2") === CUDA_SUCCESS ? toNumber(free[0], "cuMemGetInfo_v2") : 0;
    },
  });
  const launchBuffers = createLaunchBuffers();
  const env = options.librarySearch?.env ?? process.env;

  let disposed = false;
  /** Every entry point starts here: refuses a disposed device and makes this device's context current. */
  const live = (): void => {
    if (disposed) throw new TunaError("INTERNAL", `GPU ${index} (${name}) was used after dispose()`);
    if (currentContext !== ctx) {
      check(`cuCtxSetCurrent(GPU ${index})`, api.cuCtxSetCurrent(ctx));
      currentContext = ctx;
    }
  };

  // NVRTC and the kernel cache are set up on the first module: a run that only copies memory needs neither.
  let compiler: { nvrtc: Nvrtc; options: string[] } | undefined;
  const getCompiler = (): { nvrtc: Nvrtc; options: string[] } => {
    if (compiler !== undefined) return compiler;
    const nvrtcPath = requireLibrary(libraries.nvrtc, "the CUDA runtime compiler", "install the CUDA toolkit or `pip install nvidia-cuda-nvrtc-cu12`, or set CUDA_HOME");
    const nvrtc = loadNvrtc(nvrtcPath, libraries.nvrtcBuiltins.path);
    checkArchSupported(nvrtc, name, computeCapability);
    const kernelsDir = options.kernelsDir ?? defaultKernelsDir();
    const cudaIncludeDir = findCudaIncludeDir({ env, nvrtcPath });
    compiler = { nvrtc, options: nvrtcOptions({ arch, kernelsDir, cudaIncludeDir }) };
    return compiler;
  };

  const loadedModules: bigint[] = [];
  const modules = new Map<string, CudaModule>();

  const makeModule = (image: Uint8Array, label: string): CudaModule => {
    const out: unknown[] = [null];
    check(`cuModuleLoadData(${label})`, api.cuModuleLoadData(out, image));
    const hmod = toHandle(out[0], `cuModuleLoadData(${label})`);
    loadedModules.push(hmod);
    const functions = new Map<string, CudaFunction>();
    return {
      fn(fnName) {
        live();
        const known = functions.get(fnName);
        if (known !== undefined) return known;
        const fnOut: unknown[] = [null];
        const status = toNumber(api.cuModuleGetFunction(fnOut, hmod, fnName), "cuModuleGetFunction");
        if (status === CUDA_ERROR_NOT_FOUND) {
          throw new TunaError("INTERNAL", `${label} has no kernel named ${fnName} (is it declared extern "C" __global__?)`);
        }
        check(`cuModuleGetFunction(${label}, ${fnName})`, status);
        const fn = makeFunction(toHandle(fnOut[0], "cuModuleGetFunction"), `${label}:${fnName}`, fnName);
        functions.set(fnName, fn);
        return fn;
      },
    };
  };

  const makeFunction = (hfunc: bigint, label: string, fnName: string): CudaFunction => ({
    name: fnName,
    launch(grid: Dim3, block: Dim3, sharedBytes: number, args: readonly KernelArg[]) {
      live();
      try {
        launchBuffers.pack(args);
      } catch (e) {
        throw new TunaError("INTERNAL", `launching ${label}: ${errorMessage(e)}`, { cause: e });
      }
      const status: unknown = api.cuLaunchKernel(
        hfunc, grid[0], grid[1], grid[2], block[0], block[1], block[2], sharedBytes, null, launchBuffers.paramsPtr, null,
      );
      if (status !== CUDA_SUCCESS) {
        check(`cuLaunchKernel(${label}, grid ${dimText(grid)}, block ${dimText(block)}, shared ${sharedBytes} bytes, ${args.length} args)`, status);
      }
    },
    setMaxDynamicSharedBytes(bytes: number) {
      live();
      check(
        `cuFuncSetAttribute(${label}, MAX_DYNAMIC_SHARED_SIZE_BYTES, ${bytes})`,
        api.cuFuncSetAttribute(hfunc, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes),
      );
    },
  });

  let blas: { lt: CublasLt; workspace: DevicePtr } | undefined;
  const getBlas = (): { lt: CublasLt; workspace: DevicePtr } => {
    if (blas !== undefined) return blas;
    const path = requireLibrary(libraries.cublasLt, "cuBLAS's matmul library", "install the CUDA toolkit or `pip install nvidia-cublas-cu12`, or set CUDA_HOME");
    const workspace = allocator.alloc(GEMM_WORKSPACE_BYTES, "the cuBLASLt workspace");
    try {
      blas = { lt: openCublasLt({ path, workspace, workspaceBytes: GEMM_WORKSPACE_BYTES }), workspace };
    } catch (e) {
      allocator.free(workspace);
      throw e;
    }
    return blas;
  };


  const timedEvent = (): bigint => {
    const out: unknown[] = [null];
    check("cuEventCreate", api.cuEventCreate(out, 0));
    return toHandle(out[0], "cuEventCreate");
  };

  const device: CudaRuntimeDevice = {
    index,
    name,
    arch,
    multiprocessorCount,
    computeCapability,

    alloc(bytes, what) {
      live();
      return allocator.alloc(bytes, what);
    },
    free(ptr) {
      live();
      allocator.free(ptr);
    },
    memoryStats: () => allocator.stats(),
    resetPeak() {
      allocator.resetPeak();
    },

    upload(dst, src) {
      live();
      if (src.byteLength === 0) return;
      check(`cuMemcpyHtoD_v2(${formatPtr(dst)}, ${src.byteLength} bytes)`, api.cuMemcpyHtoD(dst, bytesOf(src), src.byteLength));
    },
    download(dst, src) {
      live();
      if (dst.byteLength === 0) return;
      check(`cuMemcpyDtoH_v2(${formatPtr(src)}, ${dst.byteLength} bytes)`, api.cuMemcpyDtoH(bytesOf(dst), src, dst.byteLength));
    },
    copy(dst, src, bytes) {
      live();
      if (bytes === 0) return;
      check(`cuMemcpyDtoD_v2(${formatPtr(dst)} <- ${formatPtr(src)}, ${bytes} bytes)`, api.cuMemcpyDtoD(dst, src, bytes));
    },
    memset(dst, value, bytes) {
      live();
      if (!Number.isInteger(value) || value < 0 || value > 255) throw new TunaError("INTERNAL", `memset value ${value} is not a byte`);
      if (bytes === 0) return;
      check(`cuMemsetD8_v2(${formatPtr(dst)}, ${value}, ${bytes} bytes)`, api.cuMemsetD8(dst, value, bytes));
    },

    module(file) {
      live();
      const known = modules.get(file);
      if (known !== undefined) return known;
      const { nvrtc, options: compileOptions } = getCompiler();
      const { cubin } = loadKernelBinary(
        {
          kernelsDir: options.kernelsDir ?? defaultKernelsDir(),
          cacheDir: options.kernelCacheDir ?? defaultKernelCacheDir(env),
          arch,
          options: compileOptions,
          compiler: nvrtc,
        },
        file,
      );
      const mod = makeModule(cubin, file);
      modules.set(file, mod);
      return mod;
    },
    moduleFromSource(source, sourceName) {
      live();
      const { nvrtc, options: compileOptions } = getCompiler();
      return makeModule(nvrtc.compile(source, sourceName, compileOptions), sourceName);
    },

    gemm(call) {
      live();
      getBlas().lt.gemm(call);
    },

    synchronize() {
      live();
      const status = toNumber(api.cuCtxSynchronize(), "cuCtxSynchronize");
      if (status !== CUDA_SUCCESS) {
        throw new TunaError(
          "GPU",
          `GPU ${index} (${name}) reported an error from earlier work: cuCtxSynchronize failed: ${driver.describe(status)}. ` +
            "Kernels run asynchronously, so the failing one may be any launched since the last synchronize; CUDA_LAUNCH_BLOCKING=1 makes the failing launch report it.",
        );
      }
    },

    timed(body) {
      live();
      const start = timedEvent();
      let end: bigint | undefined;
      try {
        end = timedEvent();
        check("cuEventRecord(start)", api.cuEventRecord(start, null));
        body();
        check("cuEventRecord(end)", api.cuEventRecord(end, null));
        check("cuEventSynchronize", api.cuEventSynchronize(end));
        const ms = [0];
        check("cuEventElapsedTime", api.cuEventElapsedTime(ms, start, end));
        return ms[0] ?? 0;
      } finally {
        api.cuEventDestroy(start);
        if (end !== undefined) api.cuEventDestroy(end);
      }
    },

    dispose() {
      if (disposed) return;
      live();
      // Teardown goes on past failures. After an asynchronous fault every call fails with the same sticky error,
      // which was (or will be) reported by synchronize(); only a failure in a healthy context is worth an error.
      const healthy = toNumber(api.cuCtxSynchronize(), "cuCtxSynchronize") === CUDA_SUCCESS;
      const failures: string[] = [];
      const attempt = (step: () => void): void => {
        try {
          step();
        } catch (e) {
          if (!isTunaError(e) || e.code !== "GPU") throw e;
          failures.push(errorMessage(e));
        }
      };
      if (blas !== undefined) {
        const { lt, workspace } = blas;
        attempt(() => {
          lt.dispose();
        });
        attempt(() => {
          allocator.free(workspace);
        });
      }
      for (const hmod of loadedModules) attempt(() => {
        check("cuModuleUnload", api.cuModuleUnload(hmod));
      });
      attempt(() => {
        allocator.releaseAll();
      });
      launchBuffers.free();
      attempt(() => {
        check(`cuDevicePrimaryCtxRelease(GPU ${index})`, api.cuDevicePrimaryCtxRelease(dev));
      });
      disposed = true;
      if (currentContext === ctx) currentContext = undefined;
      if (healthy && failures.length > 0) throw new TunaError("GPU", `releasing GPU ${index} (${name}) failed: ${failures.join("; ")}`);
    },
  };
  return device;
}
