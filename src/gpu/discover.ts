// Finds the NVIDIA libraries tuna loads (driver, NVRTC, cuBLASLt, NCCL, cuDNN) on disk, without loading them.
// The file system is injected (exists/listDir) so tests can lay out a GPU machine on a machine without one.
import { existsSync, readdirSync } from "node:fs";
import { posix } from "node:path";

export interface LibraryResult {
  name: string; // what a person calls it: "libcuda", "NVRTC", ...
  found: boolean;
  path?: string; // the file to load, e.g. /usr/local/cuda/lib64/libnvrtc.so.13
  version?: string; // from the file name: "13" for libnvrtc.so.13, "11.2" for libnvrtc.so.11.2
  searched: string[]; // directories looked in, in order, up to the one it was found in
}

export interface LibrarySearchResult {
  dirs: string[]; // every directory of the search path, in order
  cuda: LibraryResult;
  nvrtc: LibraryResult;
  nvrtcBuiltins: LibraryResult;
  cublasLt: LibraryResult;
  nccl: LibraryResult;
  cudnn: LibraryResult;
}

export interface LibrarySearchOptions {
  env?: NodeJS.ProcessEnv;
  extraDirs?: string[]; // searched first, before LD_LIBRARY_PATH (e.g. a directory named in a config)
  exists?: (path: string) => boolean;
  listDir?: (dir: string) => string[];
}

/** A library tuna looks for: its file stem and which versioned names (lib<stem>.so.<version>) count. */
interface LibrarySpec {
  name: string;
  stem: string; // "libnvrtc" -> libnvrtc.so, libnvrtc.so.13
  minMajor: number;
  maxMajor: number;
  maxParts: number; // version parts a soname may carry: 2 accepts libnvrtc.so.11.2 but not libnvrtc.so.13.0.88
}

// libcuda is matched by exact name only: its directory also holds libcuda.so.<driver version>.
const CUDA_NAMES = ["libcuda.so.1", "libcuda.so"];
const NVRTC: LibrarySpec = { name: "NVRTC", stem: "libnvrtc", minMajor: 11, maxMajor: 99, maxParts: 2 };
const NVRTC_BUILTINS: LibrarySpec = { name: "NVRTC builtins", stem: "libnvrtc-builtins", minMajor: 11, maxMajor: 99, maxParts: 2 };
const CUBLASLT: LibrarySpec = { name: "cuBLASLt", stem: "libcublasLt", minMajor: 11, maxMajor: 99, maxParts: 1 };
const NCCL: LibrarySpec = { name: "NCCL", stem: "libnccl", minMajor: 2, maxMajor: 2, maxParts: 1 };
const CUDNN: LibrarySpec = { name: "cuDNN", stem: "libcudnn", minMajor: 8, maxMajor: 99, maxParts: 1 };

const SYSTEM_DIRS = [
  "/usr/lib/x86_64-linux-gnu",
  "/usr/lib64",
  "/usr/lib",
  "/usr/lib/wsl/lib", // WSL puts its libcuda here
  "/usr/local/nvidia/lib64", // NVIDIA container images mount the driver here
  "/usr/local/nvidia/lib",
];

function defaultListDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** "13.0" -> [13, 0]; undefined when any part is not a number. */
function parseVersion(text: string): number[] | undefined {
  const parts = text.split(".");
  if (parts.some((p) => !/^\d+$/.test(p))) return undefined;
  return parts.map(Number);
}

/** Descending order of dotted versions: 13.0 before 12.4 before 12 before 11.8. */
function compareVersionsDesc(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const diff = (b[i] ?? -1) - (a[i] ?? -1);
    if (diff !== 0) return diff;
  }
  return 0;
}

/** Entries of `dir` named `<prefix><version>` (e.g. cuda-13.0, python3.12), highest version first. */
function versionedEntries(dir: string, prefix: string, listDir: (d: string) => string[]): string[] {
  const entries: { name: string; version: number[] }[] = [];
  for (const name of listDir(dir)) {
    if (!name.startsWith(prefix)) continue;
    const version = parseVersion(name.slice(prefix.length));
    if (version !== undefined) entries.push({ name, version });
  }
  entries.sort((a, b) => compareVersionsDesc(a.version, b.version));
  return entries.map((e) => posix.join(dir, e.name));
}

/** Directories that may hold Python packages, active environments first; found by listing, never by running python. */
function sitePackagesDirs(env: NodeJS.ProcessEnv, exists: (p: string) => boolean, listDir: (d: string) => string[]): string[] {
  const prefixes: string[] = [];
  if (env.VIRTUAL_ENV) prefixes.push(env.VIRTUAL_ENV);
  if (env.CONDA_PREFIX) prefixes.push(env.CONDA_PREFIX);
  // A python3 on PATH names its prefix (a venv's bin/ included) without having to run it.
  for (const dir of (env.PATH ?? "").split(":")) {
    if (dir.endsWith("/bin") && exists(posix.join(dir, "python3"))) prefixes.push(posix.dirname(dir));
  }
  if (env.HOME) prefixes.push(posix.join(env.HOME, ".local"));
  prefixes.push("/usr/local", "/usr");

  const dirs: string[] = [];
  for (const prefix of prefixes) {
    // python3.12/ (and Debian's python3/) but not python2.7/.
    const pythonDirs = versionedEntries(posix.join(prefix, "lib"), "python", listDir).filter((d) => /\/python3(\.\d+)?$/.test(d));
    for (const pythonDir of pythonDirs) {
      dirs.push(posix.join(pythonDir, "site-packages"), posix.join(pythonDir, "dist-packages"));
    }
  }
  return dirs;
}

/**
 * The directories searched, in order: extraDirs, LD_LIBRARY_PATH, CUDA_HOME/CUDA_PATH, /usr/local/cuda,
 * /usr/local/cuda-* (highest version first), the system directories, then the lib/ folders of
 * Python's nvidia-* wheels (site-packages/nvidia/<package>/lib) and a conda environment's lib/.
 */
export function librarySearchDirs(options: LibrarySearchOptions = {}): string[] {
  const env = options.env ?? process.env;
  const exists = options.exists ?? existsSync;
  const listDir = options.listDir ?? defaultListDir;
  const dirs: string[] = [...(options.extraDirs ?? [])];
  for (const entry of (env.LD_LIBRARY_PATH ?? "").split(":")) if (entry !== "") dirs.push(entry);
  for (const home of [env.CUDA_HOME, env.CUDA_PATH]) {
    if (home) dirs.push(posix.join(home, "lib64"), posix.join(home, "lib"), posix.join(home, "targets/x86_64-linux/lib"));
  }
  dirs.push("/usr/local/cuda/lib64");
  for (const toolkit of versionedEntries("/usr/local", "cuda-", listDir)) dirs.push(posix.join(toolkit, "lib64"));
  dirs.push(...SYSTEM_DIRS);
  if (env.CONDA_PREFIX) dirs.push(posix.join(env.CONDA_PREFIX, "lib"));
  for (const site of sitePackagesDirs(env, exists, listDir)) {
    const nvidia = posix.join(site, "nvidia");
    for (const pkg of listDir(nvidia).sort()) dirs.push(posix.join(nvidia, pkg, "lib"));
  }
  const seen = new Set<string>();
  return dirs
    .map((d) => (d.length > 1 ? d.replace(/\/+$/, "") : d))
    .filter((d) => {
      if (seen.has(d)) return false;
      seen.add(d);
      return true;
    });
}

/** In one directory's entries: accepted `<stem>.so.<version>` names, highest version first, then the bare `<stem>.so`. */
function candidatesInDir(spec: LibrarySpec, entries: string[]): { file: string; version?: string }[] {
  const prefix = `${spec.stem}.so.`;
  const versioned: { file: string; version: string; parts: number[] }[] = [];
  for (const file of entries) {
    if (!file.startsWith(prefix)) continue;
    const text = file.slice(prefix.length);
    const parts = parseVersion(text);
    const major = parts?.[0];
    if (parts === undefined || major === undefined || parts.length > spec.maxParts) continue;
    if (major < spec.minMajor || major > spec.maxMajor) continue;
    versioned.push({ file, version: text, parts });
  }
  versioned.sort((a, b) => compareVersionsDesc(a.parts, b.parts));
  const candidates: { file: string; version?: string }[] = versioned.map(({ file, version }) => ({ file, version }));
  if (entries.includes(`${spec.stem}.so`)) candidates.push({ file: `${spec.stem}.so` });
  return candidates;
}

/**
 * The first directory holding the library wins, so LD_LIBRARY_PATH and CUDA_HOME override the system;
 * within that directory the highest version wins.
 */
function findVersioned(
  spec: LibrarySpec,
  dirs: string[],
  exists: (p: string) => boolean,
  listDir: (d: string) => string[],
): LibraryResult {
  const searched: string[] = [];
  for (const dir of dirs) {
    searched.push(dir);
    // exists() follows links, so a dangling libX.so.13 link is passed over.
    const pick = candidatesInDir(spec, listDir(dir)).find((c) => exists(posix.join(dir, c.file)));
    if (pick === undefined) continue;
    const result: LibraryResult = { name: spec.name, found: true, path: posix.join(dir, pick.file), searched };
    if (pick.version !== undefined) result.version = pick.version;
    return result;
  }
  return { name: spec.name, found: false, searched };
}

function findDriver(dirs: string[], exists: (p: string) => boolean): LibraryResult {
  const searched: string[] = [];
  for (const dir of dirs) {
    searched.push(dir);
    for (const file of CUDA_NAMES) {
      const path = posix.join(dir, file);
      if (!exists(path)) continue;
      const result: LibraryResult = { name: "libcuda", found: true, path, searched };
      if (file === "libcuda.so.1") result.version = "1";
      return result;
    }
  }
  return { name: "libcuda", found: false, searched };
}

/** Looks for every library tuna can use. Reads directories only; loads nothing and never throws. */
export function findCudaLibraries(options: LibrarySearchOptions = {}): LibrarySearchResult {
  const exists = options.exists ?? existsSync;
  const rawListDir = options.listDir ?? defaultListDir;
  const listings = new Map<string, string[]>();
  const listDir = (dir: string): string[] => {
    let entries = listings.get(dir);
    if (entries === undefined) {
      entries = rawListDir(dir);
      listings.set(dir, entries);
    }
    return entries;
  };
  const dirs = librarySearchDirs({ ...options, exists, listDir });
  const nvrtc = findVersioned(NVRTC, dirs, exists, listDir);
  // The builtins must sit beside the NVRTC that loads them, so look there first.
  const nvrtcDir = nvrtc.path === undefined ? undefined : posix.dirname(nvrtc.path);
  const builtinsDirs = nvrtcDir === undefined ? dirs : [nvrtcDir, ...dirs.filter((d) => d !== nvrtcDir)];
  return {
    dirs,
    cuda: findDriver(dirs, exists),
    nvrtc,
    nvrtcBuiltins: findVersioned(NVRTC_BUILTINS, builtinsDirs, exists, listDir),
    cublasLt: findVersioned(CUBLASLT, dirs, exists, listDir),
    nccl: findVersioned(NCCL, dirs, exists, listDir),
    cudnn: findVersioned(CUDNN, dirs, exists, listDir),
  };
}
