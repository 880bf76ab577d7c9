// NVRTC (the CUDA runtime compiler) bound through koffi: CUDA C++ source to a cubin for this GPU's arch,
// the compile options tuna uses, and where the CUDA headers (cuda_bf16.h) are found.
import { existsSync } from "node:fs";
import { posix } from "node:path";
import { TunaError } from "../../util/errors.ts";
import { bindAll, loadLibrary, toHandle, toNumber, type NativeFunction } from "./driver.ts";

export const NVRTC_PROTOTYPES = {
  nvrtcGetErrorString: "const char *nvrtcGetErrorString(int result)",
  nvrtcVersion: "int nvrtcVersion(_Out_ int *major, _Out_ int *minor)",
  nvrtcGetNumSupportedArchs: "int nvrtcGetNumSupportedArchs(_Out_ int *numArchs)",
  nvrtcGetSupportedArchs: "int nvrtcGetSupportedArchs(void *supportedArchs)",
  nvrtcCreateProgram:
    "int nvrtcCreateProgram(_Out_ void **prog, const char *src, const char *name, int numHeaders, const char **headers, const char **includeNames)",
  nvrtcCompileProgram: "int nvrtcCompileProgram(void *prog, int numOptions, const char **options)",
  nvrtcGetProgramLogSize: "int nvrtcGetProgramLogSize(void *prog, _Out_ size_t *logSizeRet)",
  nvrtcGetProgramLog: "int nvrtcGetProgramLog(void *prog, void *log)",
  nvrtcGetCUBINSize: "int nvrtcGetCUBINSize(void *prog, _Out_ size_t *cubinSizeRet)",
  nvrtcGetCUBIN: "int nvrtcGetCUBIN(void *prog, void *cubin)",
  nvrtcDestroyProgram: "int nvrtcDestroyProgram(_Inout_ void **prog)",
} as const;

const NVRTC_SUCCESS = 0;

export interface Nvrtc {
  readonly path: string;
  /** "13.0" */
  readonly version: string;
  /** The compute capabilities NVRTC can target, as numbers: 75, 80, 86, 89, 90, ... */
  readonly supportedArchs: readonly number[];
  /**
   * Compiles `source` to a cubin. `name` is the file NVRTC's messages refer to; a compile error is a
   * TunaError("GPU") naming it and carrying NVRTC's log.
   */
  compile(source: string, name: string, options: readonly string[]): Uint8Array;
}

function readCString(buffer: Uint8Array): string {
  const end = buffer.indexOf(0);
  return Buffer.from(buffer.buffer, buffer.byteOffset, end === -1 ? buffer.length : end).toString("utf8");
}

/**
 * Loads NVRTC. `builtinsPath` (libnvrtc-builtins beside it) is loaded first: NVRTC opens its builtins by file
 * name when it compiles, which fails with NVRTC_ERROR_BUILTIN_OPERATION_FAILURE unless the loader can find them
 * (LD_LIBRARY_PATH); a library already loaded under that name is found regardless.
 */
export function loadNvrtc(path: string, builtinsPath?: string): Nvrtc {
  if (builtinsPath !== undefined) loadLibrary(builtinsPath);
  const api = bindAll(loadLibrary(path), path, NVRTC_PROTOTYPES);
  const statusText = (status: number): string => {
    const text: unknown = api.nvrtcGetErrorString(status);
    return typeof text === "string" ? text : `nvrtcResult ${status}`;
  };
  const check = (call: string, status: unknown): void => {
    const code = toNumber(status, call);
    if (code !== NVRTC_SUCCESS) throw new TunaError("GPU", `${call} failed: ${statusText(code)} (NVRTC at ${path})`);
  };

  const major = [0];
  const minor = [0];
  check("nvrtcVersion", api.nvrtcVersion(major, minor));
  const version = `${major[0] ?? 0}.${minor[0] ?? 0}`;
  const count = [0];
  check("nvrtcGetNumSupportedArchs", api.nvrtcGetNumSupportedArchs(count));
  const archs = new Int32Array(count[0] ?? 0);
  if (archs.length > 0) check("nvrtcGetSupportedArchs", api.nvrtcGetSupportedArchs(archs));
  const supportedArchs = [...archs];

  const programLog = (prog: bigint): string => {
    const size: unknown[] = [0];
    check("nvrtcGetProgramLogSize", api.nvrtcGetProgramLogSize(prog, size));
    const bytes = toNumber(size[0], "nvrtcGetProgramLogSize");
    if (bytes <= 1) return "";
    const log = Buffer.alloc(bytes);
    check("nvrtcGetProgramLog", api.nvrtcGetProgramLog(prog, log));
    return readCString(log).trim();
  };

  const compileProgram = (prog: bigint, name: string, options: readonly string[]): Uint8Array => {
    const status = toNumber(api.nvrtcCompileProgram(prog, options.length, options), "nvrtcCompileProgram");
    if (status !== NVRTC_SUCCESS) {
      const log = programLog(prog);
      throw new TunaError(
        "GPU",
        `NVRTC ${version} could not compile ${name} (${statusText(status)}); options: ${options.join(" ")}\n${log === "" ? "(NVRTC gave no log)" : log}`,
      );
    }
    const size: unknown[] = [0];
    check(`nvrtcGetCUBINSize(${name})`, api.nvrtcGetCUBINSize(prog, size));
    const cubin = Buffer.alloc(toNumber(size[0], "nvrtcGetCUBINSize"));
    check(`nvrtcGetCUBIN(${name})`, api.nvrtcGetCUBIN(prog, cubin));
    return cubin;
  };

  return {
    path,
    version,
    supportedArchs,
    compile(source, name, options) {
      const handle: unknown[] = [null];
      check(`nvrtcCreateProgram(${name})`, api.nvrtcCreateProgram(handle, source, name, 0, null, null));
      const prog = toHandle(handle[0], "nvrtcCreateProgram");
      let cubin: Uint8Array;
      try {
        cubin = compileProgram(prog, name, options);
      } catch (e) {
        // The compile error is the one to report; the program is released either way.
        destroy(api.nvrtcDestroyProgram, prog);
        throw e;
      }
      check(`nvrtcDestroyProgram(${name})`, destroy(api.nvrtcDestroyProgram, prog));
      return cubin;
    },
  };
}

function destroy(nvrtcDestroyProgram: NativeFunction, prog: bigint): unknown {
  return nvrtcDestroyProgram([prog]);
}

/** "sm_90" for compute capability 9.0. */
export function gpuArch(cc: { major: number; minor: number }): string {
  return `sm_${cc.major}${cc.minor}`;
}

/** Throws a TunaError("GPU") when NVRTC cannot generate code for this GPU. */
export function checkArchSupported(nvrtc: Pick<Nvrtc, "version" | "supportedArchs" | "path">, gpuName: string, cc: { major: number; minor: number }): void {
  const code = cc.major * 10 + cc.minor;
  if (nvrtc.supportedArchs.includes(code)) return;
  const list = nvrtc.supportedArchs.map((a) => `sm_${a}`).join(", ");
  throw new TunaError(
    "GPU",
    `NVRTC ${nvrtc.version} (${nvrtc.path}) cannot compile for the ${gpuName} (${gpuArch(cc)}); it supports ${list === "" ? "no architecture" : list}. ` +
      `Install a CUDA toolkit whose NVRTC supports ${gpuArch(cc)} (set CUDA_HOME or LD_LIBRARY_PATH to it).`,
  );
}

/** The options every kernel is compiled with. No fast-math: kernels must match the CPU reference. */
export function nvrtcOptions(config: { arch: string; kernelsDir: string; cudaIncludeDir: string }): string[] {
  return [`--gpu-architecture=${config.arch}`, "-std=c++17", `-I${config.kernelsDir}`, `-I${config.cudaIncludeDir}`];
}

export interface IncludeDirSearch {
  env?: NodeJS.ProcessEnv;
  /** The NVRTC library loaded: its toolkit's include/ is a candidate. */
  nvrtcPath?: string;
  exists?: (path: string) => boolean;
}

/**
 * Candidate CUDA include directories, in order: $CUDA_HOME/include, $CUDA_PATH/include, <NVRTC's dir>/../include,
 * the cuda_runtime wheel beside an NVRTC wheel (site-packages/nvidia/<pkg>/lib), /usr/local/cuda/include.
 */
export function cudaIncludeCandidates(search: IncludeDirSearch = {}): string[] {
  const env = search.env ?? process.env;
  const dirs: string[] = [];
  for (const home of [env.CUDA_HOME, env.CUDA_PATH]) if (home) dirs.push(posix.join(home, "include"));
  if (search.nvrtcPath !== undefined) {
    const libDir = posix.dirname(search.nvrtcPath);
    dirs.push(posix.join(libDir, "..", "include"));
    // pip wheels: site-packages/nvidia/cuda_nvrtc/lib holds NVRTC, site-packages/nvidia/cuda_runtime/include the headers.
    const wheels = posix.dirname(posix.dirname(libDir));
    if (posix.basename(wheels) === "nvidia") dirs.push(posix.join(wheels, "cuda_runtime", "include"));
  }
  dirs.push("/usr/local/cuda/include");
  return [...new Set(dirs)];
}

/** The first candidate directory holding cuda_bf16.h (absent when none does), and every directory searched. */
export function locateCudaIncludeDir(search: IncludeDirSearch = {}): { dir?: string; searched: string[] } {
  const exists = search.exists ?? existsSync;
  const searched = cudaIncludeCandidates(search);
  const dir = searched.find((d) => exists(posix.join(d, "cuda_bf16.h")));
  return dir === undefined ? { searched } : { dir, searched };
}

/** The first candidate holding cuda_bf16.h; a TunaError("GPU") listing where it looked when none does. */
export function findCudaIncludeDir(search: IncludeDirSearch = {}): string {
  const { dir: found, searched: candidates } = locateCudaIncludeDir(search);
  if (found !== undefined) return found;
  throw new TunaError(
    "GPU",
    `the CUDA headers (cuda_bf16.h), which NVRTC needs to compile tuna's kernels, are not in ${candidates.join(", ")}. ` +
      "Install the CUDA toolkit headers (e.g. the cuda-cudart-dev package, or `pip install nvidia-cuda-runtime-cu12`) or set CUDA_HOME to the toolkit.",
  );
}
