// Tests for the on-disk kernel cache with a counting stand-in compiler: hits skip the compiler, every input of
// the key (source, any .cuh, options, compiler version, arch) changes it, and damaged entries are recompiled.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, readdir, rm, truncate, writeFile } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { defaultKernelCacheDir, defaultKernelsDir, kernelCacheKey, loadKernelBinary, type KernelCacheConfig } from "../../../src/backend/cuda/kernel-cache.ts";
import { isTunaError } from "../../../src/util/errors.ts";

interface Fixture {
  config: KernelCacheConfig;
  kernelsDir: string;
  cacheDir: string;
  compiles: { source: string; name: string; options: readonly string[] }[];
  cleanup: () => Promise<void>;
}

async function fixture(): Promise<Fixture> {
  const root = await mkdtemp(join(os.tmpdir(), "tuna-kernel-cache-"));
  const kernelsDir = join(root, "kernels");
  const cacheDir = join(root, "cache", "nested");
  await mkdir(kernelsDir);
  await writeFile(join(kernelsDir, "norm.cu"), '#include "common.cuh"\nextern "C" __global__ void rmsnorm() {}\n');
  await writeFile(join(kernelsDir, "common.cuh"), "#pragma once\n");
  await writeFile(join(kernelsDir, "other.cuh"), "#pragma once\n// v1\n");
  const compiles: Fixture["compiles"] = [];
  const config: KernelCacheConfig = {
    kernelsDir,
    cacheDir,
    arch: "sm_90",
    options: ["--gpu-architecture=sm_90", "-std=c++17"],
    compiler: {
      version: "13.0",
      compile(source, name, options) {
        compiles.push({ source, name, options });
        // A "cubin" that records what it was compiled from, so a test can tell builds apart.
        return new Uint8Array(Buffer.from(`CUBIN ${compiles.length} ${source.length}`));
      },
    },
  };
  return { config, kernelsDir, cacheDir, compiles, cleanup: () => rm(root, { recursive: true, force: true }) };
}

void test("the first load compiles and stores; the second is a hit that does not compile", async () => {
  const f = await fixture();
  try {
    const first = loadKernelBinary(f.config, "norm.cu");
    assert.equal(first.fromCache, false);
    assert.equal(f.compiles.length, 1);
    assert.equal(f.compiles[0]!.name, join(f.kernelsDir, "norm.cu"));
    assert.deepEqual(f.compiles[0]!.options, f.config.options);
    const second = loadKernelBinary(f.config, "norm.cu");
    assert.equal(second.fromCache, true);
    assert.equal(f.compiles.length, 1);
    assert.deepEqual(Buffer.from(second.cubin), Buffer.from(first.cubin));
    assert.equal(second.cachePath, first.cachePath);
    // Only the entry is left in the cache folder: no temporary files.
    assert.deepEqual(await readdir(f.cacheDir), [first.cachePath.slice(f.cacheDir.length + 1)]);
  } finally {
    await f.cleanup();
  }
});

void test("changing any .cuh of the folder, the options, the compiler version or the arch is a miss", async () => {
  const f = await fixture();
  try {
    const paths = new Set<string>([loadKernelBinary(f.config, "norm.cu").cachePath]);
    await writeFile(join(f.kernelsDir, "other.cuh"), "#pragma once\n// v2\n"); // not even included by norm.cu
    paths.add(loadKernelBinary(f.config, "norm.cu").cachePath);
    paths.add(loadKernelBinary({ ...f.config, options: [...f.config.options, "-lineinfo"] }, "norm.cu").cachePath);
    paths.add(loadKernelBinary({ ...f.config, compiler: { ...f.config.compiler, version: "13.1" } }, "norm.cu").cachePath);
    paths.add(loadKernelBinary({ ...f.config, arch: "sm_80" }, "norm.cu").cachePath);
    await writeFile(join(f.kernelsDir, "norm.cu"), 'extern "C" __global__ void rmsnorm2() {}\n');
    paths.add(loadKernelBinary(f.config, "norm.cu").cachePath);
    assert.equal(paths.size, 6);
    assert.equal(f.compiles.length, 6);
  } finally {
    await f.cleanup();
  }
});

void test("a truncated, empty or altered cache entry is recompiled and rewritten", async () => {
  const f = await fixture();
  try {
    const { cachePath, cubin } = loadKernelBinary(f.config, "norm.cu");
    const damage: (() => Promise<void>)[] = [
      () => truncate(cachePath, 40),
      () => truncate(cachePath, 0),
      async () => {
        const bytes = await readFile(cachePath);
        bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0xff, bytes.length - 1);
        await writeFile(cachePath, bytes);
      },
    ];
    for (const [i, harm] of damage.entries()) {
      await harm();
      const again = loadKernelBinary(f.config, "norm.cu");
      assert.equal(again.fromCache, false, `damage ${i}`);
      assert.equal(f.compiles.length, i + 2);
      assert.equal(loadKernelBinary(f.config, "norm.cu").fromCache, true, `rewritten after damage ${i}`);
    }
    assert.ok(cubin.length > 0);
  } finally {
    await f.cleanup();
  }
});

void test("an unwritable cache only costs recompiles", async () => {
  const f = await fixture();
  try {
    await writeFile(join(f.cacheDir, "..", "..", "blocker"), "a file where a folder should be");
    const config = { ...f.config, cacheDir: join(f.cacheDir, "..", "..", "blocker", "sub") };
    assert.equal(loadKernelBinary(config, "norm.cu").fromCache, false);
    assert.equal(loadKernelBinary(config, "norm.cu").fromCache, false);
    assert.equal(f.compiles.length, 2);
  } finally {
    await f.cleanup();
  }
});

void test("a kernel name that is not a .cu file of the folder is an internal error", async () => {
  const f = await fixture();
  try {
    for (const bad of ["../norm.cu", "norm.cuh", "missing.cu"]) {
      assert.throws(() => loadKernelBinary(f.config, bad), (e) => isTunaError(e) && e.code === "INTERNAL", bad);
    }
  } finally {
    await f.cleanup();
  }
});

void test("the key hashes headers in name order, whatever order the folder lists them", () => {
  const base = { file: "a.cu", source: "s", options: ["-x"], compilerVersion: "13.0", arch: "sm_90" };
  const h1 = { name: "a.cuh", text: "1" };
  const h2 = { name: "b.cuh", text: "2" };
  assert.equal(kernelCacheKey({ ...base, headers: [h1, h2] }), kernelCacheKey({ ...base, headers: [h2, h1] }));
  assert.notEqual(kernelCacheKey({ ...base, headers: [h1, h2] }), kernelCacheKey({ ...base, headers: [{ ...h1, text: "1!" }, h2] }));
  // Fields cannot run into each other: moving text between two options changes the key.
  assert.notEqual(kernelCacheKey({ ...base, headers: [], options: ["ab", "c"] }), kernelCacheKey({ ...base, headers: [], options: ["a", "bc"] }));
  assert.match(kernelCacheKey({ ...base, headers: [] }), /^[0-9a-f]{64}$/);
});

void test("cache folder: TUNA_KERNEL_CACHE, else XDG_CACHE_HOME/tuna/kernels, else ~/.cache/tuna/kernels", () => {
  assert.equal(defaultKernelCacheDir({ TUNA_KERNEL_CACHE: "/k", XDG_CACHE_HOME: "/x" }, "/home/u"), "/k");
  assert.equal(defaultKernelCacheDir({ XDG_CACHE_HOME: "/x" }, "/home/u"), "/x/tuna/kernels");
  assert.equal(defaultKernelCacheDir({}, "/home/u"), "/home/u/.cache/tuna/kernels");
});

void test("tuna's kernels folder is found from the package root and holds common.cuh", async () => {
  const entries = await readdir(defaultKernelsDir());
  assert.ok(entries.includes("common.cuh"), entries.join(", "));
});
