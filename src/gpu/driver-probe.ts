// Asks the CUDA driver (libcuda) and the CUDA libraries, through koffi, what they are and which GPUs exist.
// A missing or failing library is a result ({ ok: false, error }), not an exception: tuna must run without a GPU.
import koffi from "koffi";
import type { LibraryHandle } from "koffi";
import { TunaError, errorMessage, isTunaError } from "../util/errors.ts";

export interface GpuInfo {
  index: number;
  name: string; // "NVIDIA H200"
  totalMemoryBytes: number;
  computeCapability: { major: number; minor: number };
  multiprocessorCount: number;
  uuid?: string; // "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as nvidia-smi prints it; absent on old drivers
}

/** What the driver says about GPU `from` reaching GPU `to` directly (peer-to-peer), which NCCL uses. */
export interface GpuLink {
  from: number;
  to: number;
  peerAccess: boolean;
  nativeAtomics: boolean;
  /** The driver's relative rank of the link (0 is the best this machine has). */
  performanceRank: number;
}

export type DriverProbe =
  | { ok: true; libraryPath: string; driverVersion: number; driverVersionText: string; devices: GpuInfo[]; links: GpuLink[] }
  | { ok: false; libraryPath: string; error: string; driverVersion?: number; driverVersionText?: string };

export type VersionedLibrary = "nvrtc" | "cublasLt" | "nccl" | "cudnn";

export type LibraryVersionProbe =
  | { ok: true; libraryPath: string; version: string; versionCode?: number }
  | { ok: false; libraryPath: string; error: string };

type NativeFunction = ReturnType<LibraryHandle["func"]>;

const CUDA_SUCCESS = 0;
const CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
const DEVICE_NAME_BYTES = 256;

function loadLibrary(path: string): LibraryHandle {
  try {
    return koffi.load(path);
  } catch (e) {
    throw new TunaError("GPU", `could not load ${path}: ${errorMessage(e)}`, { cause: e });
  }
}

/** Binds one C prototype; a missing symbol means the file is not the library (or version) we expected. */
function bind(lib: LibraryHandle, path: string, prototype: string): NativeFunction {
  try {
    return lib.func(prototype);
  } catch (e) {
    const symbol = /(\w+)\s*\(/.exec(prototype)?.[1] ?? prototype;
    throw new TunaError("GPU", `${path} has no function ${symbol} (${errorMessage(e)}): it is not the expected library, or too old`, {
      cause: e,
    });
  }
}

function bindOptional(lib: LibraryHandle, prototype: string): NativeFunction | undefined {
  try {
    return lib.func(prototype);
  } catch {
    return undefined;
  }
}

/** koffi gives 64-bit integers as a number, or a bigint past 2^53. */
function toNumber(value: unknown, what: string): number {
  if (typeof value === "number") return value;
  if (typeof value === "bigint") return Number(value);
  throw new TunaError("INTERNAL", `${what} returned ${String(value)}, not an integer`);
}

/** The bindings the probe uses, declared together (cuda.h, CUDA 11.4+ names for the _v2 entry points). */
function bindDriver(lib: LibraryHandle, path: string) {
  return {
    cuGetErrorName: bind(lib, path, "int cuGetErrorName(int error, _Out_ const char **pStr)"),
    cuGetErrorString: bind(lib, path, "int cuGetErrorString(int error, _Out_ const char **pStr)"),
    cuDriverGetVersion: bind(lib, path, "int cuDriverGetVersion(_Out_ int *driverVersion)"),
    cuInit: bind(lib, path, "int cuInit(unsigned int flags)"),
    cuDeviceGetCount: bind(lib, path, "int cuDeviceGetCount(_Out_ int *count)"),
    cuDeviceGet: bind(lib, path, "int cuDeviceGet(_Out_ int *device, int ordinal)"),
    cuDeviceGetName: bind(lib, path, "int cuDeviceGetName(_Out_ uint8_t *name, int len, int dev)"),
    cuDeviceTotalMem: bind(lib, path, "int cuDeviceTotalMem_v2(_Out_ size_t *bytes, int dev)"),
    cuDeviceGetAttribute: bind(lib, path, "int cuDeviceGetAttribute(_Out_ int *pi, int attrib, int dev)"),
    cuDeviceGetUuid:
      bindOptional(lib, "int cuDeviceGetUuid_v2(_Out_ uint8_t *uuid, int dev)") ??
      bindOptional(lib, "int cuDeviceGetUuid(_Out_ uint8_t *uuid, int dev)"),
    cuDeviceGetP2PAttribute: bindOptional(lib, "int cuDeviceGetP2PAttribute(_Out_ int *value, int attrib, int srcDevice, int dstDevice)"),
  };
}

type DriverBindings = ReturnType<typeof bindDriver>;

/** "CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)", or the bare number when the driver has no name for it. */
function describeCuResult(driver: DriverBindings, status: number): string {
  const name: (string | null)[] = [null];
  const text: (string | null)[] = [null];
  const nameStatus: unknown = driver.cuGetErrorName(status, name);
  const textStatus: unknown = driver.cuGetErrorString(status, text);
  const nameText = nameStatus === CUDA_SUCCESS && name[0] ? name[0] : `CUresult ${status}`;
  return textStatus === CUDA_SUCCESS && text[0] ? `${nameText} (${text[0]})` : nameText;
}

/** Calls a CUresult-returning function and turns a failure into an error naming the call and the status. */
function checked(driver: DriverBindings, call: string, fn: NativeFunction, ...args: unknown[]): void {
  const status = toNumber(fn(...args), call);
  if (status !== CUDA_SUCCESS) throw new TunaError("GPU", `${call} failed: ${describeCuResult(driver, status)}`);
}

function readCString(buffer: Buffer): string {
  const end = buffer.indexOf(0);
  return buffer.toString("utf8", 0, end === -1 ? buffer.length : end);
}

function formatUuid(bytes: Buffer): string {
  const hex = bytes.toString("hex");
  return `GPU-${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** 13000 -> "13.0", 12080 -> "12.8" (cuDriverGetVersion encodes 1000 * major + 10 * minor). */
export function formatDriverVersion(code: number): string {
  return `${Math.floor(code / 1000)}.${Math.floor((code % 1000) / 10)}`;
}

function probeDevice(driver: DriverBindings, index: number): GpuInfo {
  const device = [0];
  checked(driver, `cuDeviceGet(${index})`, driver.cuDeviceGet, device, index);
  const handle = device[0] ?? 0;
  const nameBuffer = Buffer.alloc(DEVICE_NAME_BYTES);
  checked(driver, `cuDeviceGetName(device ${index})`, driver.cuDeviceGetName, nameBuffer, DEVICE_NAME_BYTES, handle);
  const bytes: unknown[] = [0];
  checked(driver, `cuDeviceTotalMem_v2(device ${index})`, driver.cuDeviceTotalMem, bytes, handle);
  const attribute = (attrib: number, label: string): number => {
    const value = [0];
    checked(driver, `cuDeviceGetAttribute(${label}, device ${index})`, driver.cuDeviceGetAttribute, value, attrib, handle);
    return value[0] ?? 0;
  };
  const info: GpuInfo = {
    index,
    name: readCString(nameBuffer),
    totalMemoryBytes: toNumber(bytes[0], "cuDeviceTotalMem_v2"),
    computeCapability: {
      major: attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, "COMPUTE_CAPABILITY_MAJOR"),
      minor: attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, "COMPUTE_CAPABILITY_MINOR"),
    },
    multiprocessorCount: attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "MULTIPROCESSOR_COUNT"),
  };
  if (driver.cuDeviceGetUuid !== undefined) {
    // The UUID is a nicety: a driver that fails it still has a usable GPU.
    const uuid = Buffer.alloc(16);
    if (driver.cuDeviceGetUuid(uuid, handle) === CUDA_SUCCESS) info.uuid = formatUuid(uuid);
  }
  return info;
}

const CU_DEVICE_P2P_ATTRIBUTE_PERFORMANCE_RANK = 1;
const CU_DEVICE_P2P_ATTRIBUTE_ACCESS_SUPPORTED = 2;
const CU_DEVICE_P2P_ATTRIBUTE_NATIVE_ATOMIC_SUPPORTED = 3;

/** Every ordered pair of GPUs: whether one reaches the other directly (NVLink or PCIe peer-to-peer). */
function probeLinks(driver: DriverBindings, count: number): GpuLink[] {
  const query = driver.cuDeviceGetP2PAttribute;
  if (query === undefined || count < 2) return [];
  const handles: number[] = [];
  for (let i = 0; i < count; i++) {
    const device = [0];
    checked(driver, `cuDeviceGet(${i})`, driver.cuDeviceGet, device, i);
    handles.push(device[0] ?? 0);
  }
  const links: GpuLink[] = [];
  for (let from = 0; from < count; from++) {
    for (let to = 0; to < count; to++) {
      if (from === to) continue;
      const attribute = (attrib: number, label: string): number => {
        const value = [0];
        checked(driver, `cuDeviceGetP2PAttribute(${label}, ${from} -> ${to})`, query, value, attrib, handles[from], handles[to]);
        return value[0] ?? 0;
      };
      links.push({
        from,
        to,
        peerAccess: attribute(CU_DEVICE_P2P_ATTRIBUTE_ACCESS_SUPPORTED, "ACCESS_SUPPORTED") === 1,
        nativeAtomics: attribute(CU_DEVICE_P2P_ATTRIBUTE_NATIVE_ATOMIC_SUPPORTED, "NATIVE_ATOMIC_SUPPORTED") === 1,
        performanceRank: attribute(CU_DEVICE_P2P_ATTRIBUTE_PERFORMANCE_RANK, "PERFORMANCE_RANK"),
      });
    }
  }
  return links;
}

/**
 * Runs a probe: a TunaError("GPU") (library missing, symbol missing, a call failed) becomes { ok: false };
 * anything else is a bug in the probe and is raised as TunaError("INTERNAL").
 */
function guarded<T>(libraryPath: string, probe: () => T, onGpuError: (message: string) => T): T {
  try {
    return probe();
  } catch (e) {
    if (isTunaError(e) && e.code === "GPU") return onGpuError(e.message);
    if (isTunaError(e)) throw e;
    throw new TunaError("INTERNAL", `probing ${libraryPath} failed unexpectedly: ${errorMessage(e)}`, { cause: e });
  }
}

/** Initializes the driver at `libcudaPath` and describes every GPU it sees. Returns { ok: false } instead of throwing. */
export function probeDriver(libcudaPath: string): DriverProbe {
  let driverVersion: number | undefined;
  return guarded<DriverProbe>(
    libcudaPath,
    () => {
      const driver = bindDriver(loadLibrary(libcudaPath), libcudaPath);
      // cuDriverGetVersion works before cuInit, so a failed cuInit can still report the driver's version.
      const version = [0];
      checked(driver, "cuDriverGetVersion", driver.cuDriverGetVersion, version);
      driverVersion = version[0] ?? 0;
      checked(driver, "cuInit", driver.cuInit, 0);
      const count = [0];
      checked(driver, "cuDeviceGetCount", driver.cuDeviceGetCount, count);
      const devices: GpuInfo[] = [];
      for (let i = 0; i < (count[0] ?? 0); i++) devices.push(probeDevice(driver, i));
      const links = probeLinks(driver, devices.length);
      return { ok: true, libraryPath: libcudaPath, driverVersion, driverVersionText: formatDriverVersion(driverVersion), devices, links };
    },
    (error) =>
      driverVersion === undefined
        ? { ok: false, libraryPath: libcudaPath, error }
        : { ok: false, libraryPath: libcudaPath, error, driverVersion, driverVersionText: formatDriverVersion(driverVersion) },
  );
}

/**
 * Splits a library's integer version: major * 10000 + minor * 100 + patch (cuBLAS; NCCL from 2.9; cuDNN from 9),
 * or major * 1000 + minor * 100 + patch below 10000 (NCCL up to 2.8, cuDNN 8).
 */
export function formatVersionCode(code: number): string {
  const base = code >= 10000 ? 10000 : 1000;
  return `${Math.floor(code / base)}.${Math.floor((code % base) / 100)}.${code % 100}`;
}

/** Checks a status-returning library call, naming the call and the library's own status string. */
function checkedLibraryCall(call: string, status: number, errorString: NativeFunction | undefined): void {
  if (status === 0) return;
  const text: unknown = errorString === undefined ? undefined : errorString(status);
  throw new TunaError("GPU", `${call} failed: status ${status}${typeof text === "string" ? ` (${text})` : ""}`);
}

function probeVersion(kind: VersionedLibrary, path: string): { version: string; versionCode?: number } {
  const lib = loadLibrary(path);
  switch (kind) {
    case "nvrtc": {
      const nvrtcVersion = bind(lib, path, "int nvrtcVersion(_Out_ int *major, _Out_ int *minor)");
      const errorString = bindOptional(lib, "const char *nvrtcGetErrorString(int result)");
      const major = [0];
      const minor = [0];
      checkedLibraryCall("nvrtcVersion", toNumber(nvrtcVersion(major, minor), "nvrtcVersion"), errorString);
      return { version: `${major[0] ?? 0}.${minor[0] ?? 0}` };
    }
    case "cublasLt": {
      const getVersion = bind(lib, path, "size_t cublasLtGetVersion()");
      const code = toNumber(getVersion(), "cublasLtGetVersion");
      // cuBLAS always uses major * 10000 + minor * 100 + patch (13.0.2 -> 130002).
      return { version: `${Math.floor(code / 10000)}.${Math.floor((code % 10000) / 100)}.${code % 100}`, versionCode: code };
    }
    case "nccl": {
      const getVersion = bind(lib, path, "int ncclGetVersion(_Out_ int *version)");
      const errorString = bindOptional(lib, "const char *ncclGetErrorString(int result)");
      const code = [0];
      checkedLibraryCall("ncclGetVersion", toNumber(getVersion(code), "ncclGetVersion"), errorString);
      return { version: formatVersionCode(code[0] ?? 0), versionCode: code[0] ?? 0 };
    }
    case "cudnn": {
      const getVersion = bind(lib, path, "size_t cudnnGetVersion()");
      const code = toNumber(getVersion(), "cudnnGetVersion");
      return { version: formatVersionCode(code), versionCode: code };
    }
  }
}

/** Loads a found library and asks it for its version (e.g. NVRTC "13.0", NCCL "2.28.3"). Returns { ok: false } instead of throwing. */
export function probeLibraryVersion(kind: VersionedLibrary, libraryPath: string): LibraryVersionProbe {
  return guarded<LibraryVersionProbe>(
    libraryPath,
    () => ({ ok: true, libraryPath, ...probeVersion(kind, libraryPath) }),
    (error) => ({ ok: false, libraryPath, error }),
  );
}
