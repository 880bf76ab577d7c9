// The on-disk cache of compiled kernels: src/backend/cuda/kernels/<file>.cu compiled once per (source, headers,
// options, NVRTC version, arch) and kept as a cubin, so a run pays NVRTC's ~60 ms per kernel file only once.
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { TunaError, errorMessage } from "../../util/errors.ts";
import { packageRoot } from "../../util/package-root.ts";

/** Bumped when the cache file format or the key's recipe changes. */
const CACHE_FORMAT = "tuna-kernel-cache/1";
const DIGEST_BYTES = 32;

export interface KernelCompiler {
  /** Part of the cache key: a new NVRTC may generate different code. */
  readonly version: string;
  compile(source: string, name: string, options: readonly string[]): Uint8Array;
}

export interface KernelCacheConfig {
  /** The folder holding the .cu files and the .cuh headers they include. */
  kernelsDir: string;
  /** Where cubins are kept; created on first write. */
  cacheDir: string;
  arch: string;
  options: readonly string[];
  compiler: KernelCompiler;
}

export interface KernelBinary {
  cubin: Uint8Array;
  fromCache: boolean;
  cachePath: string;
}

/** The kernels shipped with tuna (resolved from tuna's package folder, so it also works from dist/). */
export function defaultKernelsDir(): string {
  return join(packageRoot(import.meta.url), "src", "backend", "cuda", "kernels");
}

/** $TUNA_KERNEL_CACHE, else $XDG_CACHE_HOME/tuna/kernels, else ~/.cache/tuna/kernels. */
export function defaultKernelCacheDir(env: NodeJS.ProcessEnv = process.env, home: string = os.homedir()): string {
  if (env.TUNA_KERNEL_CACHE) return env.TUNA_KERNEL_CACHE;
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, "tuna", "kernels");
  return join(home, ".cache", "tuna", "kernels");
}

export interface KernelKeyParts {
  file: string;
  source: string;
  /** Every .cuh of the kernels folder, by file name. */
  headers: readonly { name: string; text: string }[];
  options: readonly string[];
  compilerVersion: string;
  arch: string;
}

/** sha256 (hex) over everything that changes the compiled code. Headers are taken in name order. */
export function kernelCacheKey(parts: KernelKeyParts): string {
  const hash = createHash("sha256");
  const field = (label: string, value: string): void => {
    // Length-prefixed, so no two different inputs concatenate to the same bytes.
    const bytes = Buffer.from(value, "utf8");
    hash.update(`${label}:${bytes.length}:`);
    hash.update(bytes);
  };
  field("format", CACHE_FORMAT);
  field("file", parts.file);
  field("source", parts.source);
  for (const header of [...parts.headers].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    field("header", header.name);
    field("text", header.text);
  }
  for (const option of parts.options) field("option", option);
  field("compiler", parts.compilerVersion);
  field("arch", parts.arch);
  return hash.digest("hex");
}

function readKernelSources(kernelsDir: string, file: string): { source: string; headers: { name: string; text: string }[] } {
  if (!/^[\w.-]+\.cu$/.test(file)) {
    throw new TunaError("INTERNAL", `kernel file "${file}" must be the name of a .cu file in ${kernelsDir}`);
  }
  try {
    const source = readFileSync(join(kernelsDir, file), "utf8");
    const headers = readdirSync(kernelsDir)
      .filter((name) => name.endsWith(".cuh"))
      .map((name) => ({ name, text: readFileSync(join(kernelsDir, name), "utf8") }));
    return { source, headers };
  } catch (e) {
    throw new TunaError("INTERNAL", `cannot read kernel ${join(kernelsDir, file)}: ${errorMessage(e)} (is tuna's installation complete?)`, { cause: e });
  }
}

/** A cache file is the sha256 of the cubin, then the cubin: a truncated or damaged file fails the check. */
function encodeEntry(cubin: Uint8Array): Buffer {
  return Buffer.concat([createHash("sha256").update(cubin).digest(), cubin]);
}

function decodeEntry(bytes: Buffer): Uint8Array | undefined {
  if (bytes.length <= DIGEST_BYTES) return undefined;
  const cubin = bytes.subarray(DIGEST_BYTES);
  const digest = createHash("sha256").update(cubin).digest();
  return digest.equals(bytes.subarray(0, DIGEST_BYTES)) ? cubin : undefined;
}

function readEntry(path: string): Uint8Array | undefined {
  try {
    return decodeEntry(readFileSync(path));
  } catch {
    return undefined; // missing or unreadable: a miss
  }
}

/** Written under a temporary name and renamed, so a reader never sees half a file. */
function writeEntry(cacheDir: string, path: string, cubin: Uint8Array): void {
  const temp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    mkdirSync(cacheDir, { recursive: true });
    writeFileSync(temp, encodeEntry(cubin));
    renameSync(temp, path);
  } catch {
    // A cache that cannot be written (read-only home, full disk) only costs a recompile next run.
    try {
      rmSync(temp, { force: true });
    } catch {
      // nothing was written
    }
  }
}

/** The cubin of kernels/<file>: from the cache when an intact entry exists, else compiled and stored. */
export function loadKernelBinary(config: KernelCacheConfig, file: string): KernelBinary {
  const { source, headers } = readKernelSources(config.kernelsDir, file);
  const key = kernelCacheKey({ file, source, headers, options: config.options, compilerVersion: config.compiler.version, arch: config.arch });
  const cachePath = join(config.cacheDir, `${file.replace(/\.cu$/, "")}-${config.arch}-${key.slice(0, 32)}.cubin`);
  const cached = readEntry(cachePath);
  if (cached !== undefined) return { cubin: cached, fromCache: true, cachePath };
  const cubin = config.compiler.compile(source, join(config.kernelsDir, file), config.options);
  writeEntry(config.cacheDir, cachePath, cubin);
  return { cubin, fromCache: false, cachePath };
}
