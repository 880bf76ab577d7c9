// Tests for openCudaDevice against the stand-in libcuda/NVRTC/cuBLASLt of fake-cuda.ts: memory, kernel modules and
// launches, the kernel cache, GEMMs in all transpose combinations, errors and a complete teardown, all without a GPU.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { readdir, readFile, rm } from "node:fs/promises";
import koffi from "koffi";
import { openCudaDevice, type CudaRuntimeDevice } from "../../../src/backend/cuda/device.ts";
import type { DevicePtr, DeviceTensor, GemmDtype } from "../../../src/backend/cuda/types.ts";
import { isTunaError } from "../../../src/util/errors.ts";
import { bf16BitsToF32, f32ToBf16Bits } from "../../../src/util/half.ts";
import { createRng } from "../../../src/util/random.ts";
import { buildFakeCuda, hasCompiler, type FakeCuda } from "./fake-cuda.ts";

// Under CI (.ci/run) a missing C compiler is a failure, not a skip: the machine image has one.
const skip = hasCompiler || process.env.CI !== undefined ? false : "no C compiler (cc) on this machine";
let fake: FakeCuda | undefined;

async function setup(): Promise<FakeCuda> {
  fake ??= await buildFakeCuda();
  return fake;
}

after(async () => {
  if (fake !== undefined) await rm(fake.dir, { recursive: true, force: true });
});

function open(f: FakeCuda): CudaRuntimeDevice {
  return openCudaDevice({
    kernelsDir: f.kernelsDir,
    kernelCacheDir: f.cacheDir,
    librarySearch: { env: { CUDA_HOME: f.dir } },
  });
}

/** Counters inside the stand-in libraries (the same loaded copies the device uses). */
function state(f: FakeCuda) {
  const cuda = koffi.load(f.cudaPath).func("int fakeCudaState(int what)");
  const nvrtc = koffi.load(f.nvrtcPath).func("int fakeNvrtcState(int what)");
  const blas = koffi.load(f.cublasLtPath).func("int fakeBlasState(int what)");
  const clearFault = koffi.load(f.cudaPath).func("void fakeCudaClearFault()");
  const n = (fn: typeof cuda, what: number): number => fn(what) as number;
  return {
    contexts: () => n(cuda, 0),
    events: () => n(cuda, 1),
    usedKiB: () => n(cuda, 2),
    modules: () => n(cuda, 4),
    sharedAttr: () => n(cuda, 5),
    current: () => n(cuda, 6),
    programs: () => n(nvrtc, 0),
    compiles: () => n(nvrtc, 1),
    blasObjects: () => n(blas, 0),
    matmuls: () => n(blas, 1),
    clearFault: (): void => {
      clearFault();
    },
  };
}

void test("no libcuda: a GPU error that says what is missing and points at tuna doctor", () => {
  assert.throws(
    () => openCudaDevice({ librarySearch: { env: {}, exists: () => false, listDir: () => [] } }),
    (e) => isTunaError(e) && e.code === "GPU" && e.message.includes("libcuda (the NVIDIA driver) was not found") && e.message.includes("tuna doctor"),
  );
});

void test("device facts, memory round trips, memset, copy and statistics", { skip }, async () => {
  const f = await setup();
  const s = state(f);
  const dev = open(f);
  try {
    assert.equal(dev.name, "Fake H200");
    assert.equal(dev.arch, "sm_90");
    assert.equal(dev.multiprocessorCount, 132);
    assert.equal(s.current(), 1);
    const values = Float32Array.from({ length: 1000 }, (_v, i) => i * 0.5 - 7);
    const a = dev.alloc(values.byteLength, "a");
    const b = dev.alloc(values.byteLength, "b");
    dev.upload(a, values);
    const back = new Float32Array(1000);
    dev.download(back, a);
    assert.deepEqual(back, values);
    // Views with an offset travel as their own bytes only.
    const window = new Float32Array(back.buffer, 40, 10);
    dev.memset(a, 0, 4000);
    dev.download(window, a);
    assert.deepEqual([...back.subarray(8, 12)], [-3, -2.5, 0, 0]);
    dev.upload(a, values);
    dev.copy(b, a, 4000);
    dev.memset(a, 0x3f, 8); // 0x3f3f3f3f as f32
    const both = new Float32Array(2);
    dev.download(both, a);
    assert.equal(both[0], new Float32Array(new Uint32Array([0x3f3f3f3f]).buffer)[0]);
    dev.download(back, b);
    assert.deepEqual(back, values);
    const stats = dev.memoryStats();
    assert.equal(stats.inUseBytes, 8192); // two 4 KiB blocks
    assert.equal(stats.totalBytes, 64 * 2 ** 20);
    dev.free(a);
    dev.free(b);
    assert.equal(dev.memoryStats().inUseBytes, 0);
    assert.equal(dev.memoryStats().reservedBytes, 8192);
  } finally {
    dev.dispose();
  }
  assert.equal(s.usedKiB(), 0);
  assert.equal(s.contexts(), 0);
});

void test("a kernel from source: launched through kernelParams with every argument kind", { skip }, async () => {
  const f = await setup();
  const dev = open(f);
  const s = state(f);
  try {
    const mod = dev.moduleFromSource('extern "C" __global__ void fill(float* out, int n, float v) {}', "fill-test.cu");
    const out = dev.alloc(64 * 4, "out");
    mod.fn("fill").launch([1, 1, 1], [64, 1, 1], 0, [{ ptr: out }, { i32: 64 }, { f32: 1.25 }]);
    const host = new Float32Array(64);
    dev.download(host, out);
    assert.ok(host.every((v) => v === 1.25));

    const echo = mod.fn("echo");
    assert.equal(mod.fn("echo"), echo); // memoized
    echo.launch([3, 2, 1], [128, 1, 1], 4096, [
      { ptr: out }, { i32: -7 }, { u32: 4000000000 }, { i64: -(2n ** 40n) }, { u64: 2n ** 63n + 5n }, { f32: -0.5 }, { ptr: 0xdeadbeef000n },
    ]);
    const bytes = new DataView(new ArrayBuffer(72));
    dev.download(bytes, out);
    // struct Echo { i32; u32; i64; u64; float; u64 ptr; u32 shape[7]; } with natural alignment.
    assert.equal(bytes.getInt32(0, true), -7);
    assert.equal(bytes.getUint32(4, true), 4000000000);
    assert.equal(bytes.getBigInt64(8, true), -(2n ** 40n));
    assert.equal(bytes.getBigUint64(16, true), 2n ** 63n + 5n);
    assert.equal(bytes.getFloat32(24, true), -0.5);
    assert.equal(bytes.getBigUint64(32, true), 0xdeadbeef000n);
    assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((i) => bytes.getUint32(40 + 4 * i, true)), [3, 2, 1, 128, 1, 1, 4096]);

    echo.setMaxDynamicSharedBytes(100 * 1024);
    assert.equal(s.sharedAttr(), 100 * 1024);
    assert.throws(() => mod.fn("nope"), (e) => isTunaError(e) && e.code === "INTERNAL" && /fill-test\.cu has no kernel named nope/.test(e.message));
    assert.throws(() => { mod.fn("fill").launch([0, 1, 1], [1, 1, 1], 0, []); }, /cuLaunchKernel\(fill-test\.cu:fill, grid \[0, 1, 1\].*CUDA_ERROR_INVALID_VALUE/);
    assert.throws(
      () => { mod.fn("fill").launch([1, 1, 1], [1, 1, 1], 0, [{ ptr: out }, { i32: 1.5 }]); },
      (e) => isTunaError(e) && e.code === "INTERNAL" && e.message.includes("launching fill-test.cu:fill: kernel argument 1 (i32) is 1.5"),
    );
    assert.equal(dev.timed(() => undefined), 2.5);
    assert.equal(s.events(), 0);
    dev.free(out);
  } finally {
    dev.dispose();
  }
  assert.equal(s.modules(), 0);
  assert.equal(s.programs(), 0);
});

void test("module(file): compiled with the arch, C++17 and both include folders, then loaded from the disk cache", { skip }, async () => {
  const f = await setup();
  const s = state(f);
  const before = s.compiles();
  const dev = open(f);
  try {
    const mod = dev.module("fill.cu");
    assert.equal(dev.module("fill.cu"), mod);
    assert.equal(s.compiles(), before + 1);
  } finally {
    dev.dispose();
  }
  const [entry] = await readdir(f.cacheDir);
  const cubin = (await readFile(`${f.cacheDir}/${entry!}`)).subarray(32).toString("utf8");
  const options = cubin.split("\n").slice(1, 5);
  assert.deepEqual(options, ["--gpu-architecture=sm_90", "-std=c++17", `-I${f.kernelsDir}`, `-I${f.dir}/include`]);
  const again = open(f);
  try {
    again.module("fill.cu").fn("fill");
    assert.equal(s.compiles(), before + 1); // from the cache
  } finally {
    again.dispose();
  }
});

void test("a compile error names the file and shows NVRTC's log", { skip }, async () => {
  const f = await setup();
  const dev = open(f);
  try {
    assert.throws(
      () => dev.moduleFromSource("#error broken\n", "broken.cu"),
      (e) => isTunaError(e) && e.code === "GPU" && e.message.includes("could not compile broken.cu (NVRTC_ERROR_COMPILATION)") && e.message.includes("broken.cu(1): error: #error directive"),
    );
    assert.equal(state(f).programs(), 0);
  } finally {
    dev.dispose();
  }
});

function upload(dev: CudaRuntimeDevice, dtype: GemmDtype, values: Float32Array, shape: number[]): DeviceTensor {
  const data = dtype === "f32" ? values : Uint16Array.from(values, (v) => f32ToBf16Bits(v));
  const ptr: DevicePtr = dev.alloc(data.byteLength, "gemm operand");
  dev.upload(ptr, data);
  return { ptr, dtype, shape, size: values.length };
}

function downloadF32(dev: CudaRuntimeDevice, t: DeviceTensor): Float32Array {
  if (t.dtype === "f32") {
    const out = new Float32Array(t.size);
    dev.download(out, t.ptr);
    return out;
  }
  const bits = new Uint16Array(t.size);
  dev.download(bits, t.ptr);
  return Float32Array.from(bits, (b) => bf16BitsToF32(b));
}

void test("gemm: f32 and bf16 in all four transpose combinations, beta = 1 accumulation, bad calls refused", { skip }, async () => {
  const f = await setup();
  const s = state(f);
  const dev = open(f);
  const rng = createRng(3);
  const [m, n, k] = [3, 5, 4];
  try {
    for (const [inType, outType] of [["f32", "f32"], ["bf16", "bf16"], ["bf16", "f32"]] as const) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          // Values exact in bf16, so every dtype has one exact expected answer.
          const av = Float32Array.from({ length: m * k }, () => Math.round(rng.normal() * 8) / 8);
          const bv = Float32Array.from({ length: k * n }, () => Math.round(rng.normal() * 8) / 8);
          const a = upload(dev, inType, av, transA ? [k, m] : [m, k]);
          const b = upload(dev, inType, bv, transB ? [n, k] : [k, n]);
          const d = upload(dev, outType, new Float32Array(m * n).fill(1), [m, n]);
          dev.gemm({ m, n, k, a, b, d, transA, transB, alpha: 1, beta: 0 });
          const got = downloadF32(dev, d);
          dev.gemm({ m, n, k, a, b, d, transA, transB, alpha: 0.5, beta: 1 });
          const accumulated = downloadF32(dev, d);
          for (let i = 0; i < m; i++) {
            for (let j = 0; j < n; j++) {
              let sum = 0;
              for (let l = 0; l < k; l++) sum += (transA ? av[l * m + i]! : av[i * k + l]!) * (transB ? bv[j * k + l]! : bv[l * n + j]!);
              const expected = outType === "f32" ? sum : bf16BitsToF32(f32ToBf16Bits(sum));
              const label = `${inType}->${outType} transA=${transA} transB=${transB} (${i}, ${j})`;
              assert.equal(got[i * n + j], expected, label);
              const total = expected * 1.5;
              assert.equal(accumulated[i * n + j], outType === "f32" ? total : bf16BitsToF32(f32ToBf16Bits(total)), `${label} beta=1`);
            }
          }
          for (const t of [a, b, d]) dev.free(t.ptr);
        }
      }
    }
    assert.equal(s.matmuls() > 0, true);
    const a = upload(dev, "f32", new Float32Array(12), [3, 4]);
    assert.throws(
      () => { dev.gemm({ m: 3, n: 5, k: 4, a, b: a, d: a, transA: false, transB: false, alpha: 1, beta: 0 }); },
      (e) => isTunaError(e) && e.code === "INTERNAL" && e.message.includes("B (f32, shape [3, 4], 12 elements) should hold (K, N) = 20 elements"),
    );
    dev.free(a.ptr);
  } finally {
    dev.dispose();
  }
  assert.equal(s.blasObjects(), 0);
  assert.equal(s.usedKiB(), 0);
});

void test("a deliberate out of memory is a clear GPU error; the device stays usable", { skip }, async () => {
  const f = await setup();
  const dev = open(f);
  try {
    const held = dev.alloc(40 * 2 ** 20, "weights");
    assert.throws(
      () => dev.alloc(10e12, "a 10 TB test tensor"),
      (e) =>
        isTunaError(e) &&
        e.code === "GPU" &&
        /out of GPU memory allocating 9\.09 TiB .*for a 10 TB test tensor: 40\.0 MiB in use by tensors, 40\.0 MiB reserved by tuna, of the GPU's 64\.0 MiB, 24\.0 MiB free on the device/.test(e.message) &&
        e.message.includes("per_device_train_batch_size"),
    );
    dev.free(held);
    dev.free(dev.alloc(60 * 2 ** 20, "after the failure")); // the cached 40 MiB block is released for it
  } finally {
    dev.dispose();
  }
});

void test("an asynchronous fault surfaces at synchronize(); dispose() still releases everything; use after dispose is refused", { skip }, async () => {
  const f = await setup();
  const s = state(f);
  const dev = open(f);
  const mod = dev.moduleFromSource('extern "C" __global__ void fault() {}', "fault.cu");
  dev.alloc(1024, "left allocated");
  mod.fn("fault").launch([1, 1, 1], [1, 1, 1], 0, []);
  try {
    assert.throws(
      () => { dev.synchronize(); },
      (e) => isTunaError(e) && e.code === "GPU" && e.message.includes("CUDA_ERROR_ILLEGAL_ADDRESS (an illegal memory access was encountered)") && e.message.includes("CUDA_LAUNCH_BLOCKING=1"),
    );
    dev.dispose(); // does not throw over the sticky error
  } finally {
    s.clearFault();
  }
  assert.equal(s.contexts(), 0);
  assert.equal(s.modules(), 0);
  assert.throws(() => dev.alloc(16, "late"), (e) => isTunaError(e) && e.code === "INTERNAL" && e.message.includes("after dispose()"));
});
