// GPU-machine test of the CUDA runtime layer (run there by hand via `npm run test:gpu`, never in CI): memory,
// NVRTC kernels with every argument kind, the kernel cache, cuBLASLt GEMMs against a JS reference, errors.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openCudaDevice, type CudaRuntimeDevice } from "../src/backend/cuda/device.ts";
import type { DeviceTensor, GemmDtype } from "../src/backend/cuda/types.ts";
import { isTunaError } from "../src/util/errors.ts";
import { bf16BitsToF32, f32ToBf16Bits } from "../src/util/half.ts";
import { createRng } from "../src/util/random.ts";

let tmp = "";
let dev: CudaRuntimeDevice;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tuna-gpu-runtime-"));
  dev = openCudaDevice({ kernelCacheDir: join(tmp, "cache") });
});
after(async () => {
  dev.dispose();
  await rm(tmp, { recursive: true, force: true });
});

void test("the device: name, arch and SM count", () => {
  assert.match(dev.name, /\S/);
  assert.match(dev.arch, /^sm_\d{2,3}$/);
  assert.ok(dev.multiprocessorCount > 0);
  assert.ok(dev.memoryStats().totalBytes > 8 * 2 ** 30);
});

void test("upload/download round trip, memset, device copy, statistics", () => {
  const n = 1 << 20;
  const values = Float32Array.from({ length: n }, (_v, i) => Math.sin(i));
  const inUseBefore = dev.memoryStats().inUseBytes;
  const a = dev.alloc(4 * n, "a");
  const b = dev.alloc(4 * n, "b");
  assert.equal(dev.memoryStats().inUseBytes - inUseBefore, 8 * n);
  dev.upload(a, values);
  dev.copy(b, a, 4 * n);
  dev.memset(a, 0, 4 * n);
  const back = new Float32Array(n);
  dev.download(back, b);
  assert.deepEqual(back, values);
  dev.download(back, a);
  assert.ok(back.every((v) => v === 0));
  dev.memset(a, 0xff, 4);
  const word = new Uint32Array(1);
  dev.download(word, a);
  assert.equal(word[0], 0xffffffff);
  dev.free(a);
  dev.free(b);
  // The freed blocks are cached: the same request takes one without growing the reservation.
  const reserved = dev.memoryStats().reservedBytes;
  dev.free(dev.alloc(4 * n, "again"));
  assert.equal(dev.memoryStats().reservedBytes, reserved);
});

const ARGS_KERNEL = `
#include <cuda_bf16.h>
#include "common.cuh"
extern "C" __global__ void args(float* y, const __nv_bfloat16* x, int n, float a, long long offset, unsigned int u, unsigned long long big) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * __bfloat162float(x[i]) + (float)offset + (float)u + (float)(big >> 60);
}
// Uses all of its dynamic shared memory, so a launch above 48 KiB only works after setMaxDynamicSharedBytes.
extern "C" __global__ void shared_sum(float* out, int words) {
  extern __shared__ float buf[];
  for (int i = threadIdx.x; i < words; i += blockDim.x) buf[i] = 1.0f;
  __syncthreads();
  if (threadIdx.x == 0) { float s = 0; for (int i = 0; i < words; i++) s += buf[i]; out[0] = s; }
}
`;

void test("an NVRTC kernel (cuda_bf16.h and common.cuh included) gets every argument kind; dynamic shared memory above 48 KiB", () => {
  const mod = dev.moduleFromSource(ARGS_KERNEL, "args-test.cu");
  const n = 1000;
  const x = Float32Array.from({ length: n }, (_v, i) => (i % 17) - 8);
  const xBits = Uint16Array.from(x, (v) => f32ToBf16Bits(v));
  const xd = dev.alloc(2 * n, "x");
  const yd = dev.alloc(4 * n, "y");
  dev.upload(xd, xBits);
  mod.fn("args").launch([Math.ceil(n / 256), 1, 1], [256, 1, 1], 0, [
    { ptr: yd }, { ptr: xd }, { i32: n }, { f32: 0.5 }, { i64: -3 }, { u32: 2 }, { u64: 5n << 60n },
  ]);
  const y = new Float32Array(n);
  dev.download(y, yd);
  for (let i = 0; i < n; i++) assert.equal(y[i], 0.5 * x[i]! - 3 + 2 + 5, `element ${i}`);

  const words = (64 * 1024) / 4;
  const fn = mod.fn("shared_sum");
  fn.setMaxDynamicSharedBytes(words * 4);
  fn.launch([1, 1, 1], [256, 1, 1], words * 4, [{ ptr: yd }, { i32: words }]);
  dev.download(y.subarray(0, 1), yd);
  assert.equal(y[0], words);
  dev.free(xd);
  dev.free(yd);
  dev.synchronize();
});

void test("module(file): compiled once, then loaded from the disk cache by a second device", async () => {
  const kernelsDir = join(tmp, "kernels");
  const cacheDir = join(tmp, "module-cache");
  await mkdir(kernelsDir);
  await writeFile(join(kernelsDir, "common.cuh"), "#pragma once\n#include <cuda_bf16.h>\n");
  await writeFile(join(kernelsDir, "fill.cu"), '#include "common.cuh"\nextern "C" __global__ void fill(float* y, int n, float v) { int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] = v; }\n');
  for (let round = 0; round < 2; round++) {
    const d = openCudaDevice({ kernelsDir, kernelCacheDir: cacheDir });
    try {
      const start = performance.now();
      const fill = d.module("fill.cu").fn("fill");
      const ms = performance.now() - start;
      const y = d.alloc(4 * 100, "y");
      fill.launch([1, 1, 1], [128, 1, 1], 0, [{ ptr: y }, { i32: 100 }, { f32: round + 0.25 }]);
      const host = new Float32Array(100);
      d.download(host, y);
      assert.ok(host.every((v) => v === round + 0.25));
      assert.equal((await readdir(cacheDir)).length, 1);
      if (round === 1) assert.ok(ms < 50, `a cache hit should not compile (took ${ms.toFixed(1)} ms)`);
    } finally {
      d.dispose();
    }
  }
});

void test("a compile error names the file and carries NVRTC's log", () => {
  assert.throws(
    () => dev.moduleFromSource('extern "C" __global__ void k() { undeclared_thing = 1; }', "broken-test.cu"),
    (e) => isTunaError(e) && e.code === "GPU" && e.message.includes("broken-test.cu") && e.message.includes("undeclared_thing"),
  );
});

function toDevice(dtype: GemmDtype, values: Float32Array, shape: number[], offsetElements = 0): DeviceTensor & { base: bigint } {
  const size = dtype === "f32" ? 4 : 2;
  const base = dev.alloc((values.length + offsetElements) * size, "gemm operand");
  const ptr = base + BigInt(offsetElements * size);
  dev.upload(ptr, dtype === "f32" ? values : Uint16Array.from(values, (v) => f32ToBf16Bits(v)));
  return { base, ptr, dtype, shape, size: values.length };
}

function fromDevice(t: DeviceTensor): Float32Array {
  if (t.dtype === "f32") {
    const out = new Float32Array(t.size);
    dev.download(out, t.ptr);
    return out;
  }
  const bits = new Uint16Array(t.size);
  dev.download(bits, t.ptr);
  return Float32Array.from(bits, (b) => bf16BitsToF32(b));
}

/** Every dtype combination and transpose of one shape, with operands `offset` elements into their allocations. */
function checkGemms(cases: readonly (readonly [number, number, number, number])[]): void {
  const rng = createRng(11);
  for (const [m, n, k, offset] of cases) {
    for (const [inType, outType] of [["f32", "f32"], ["bf16", "bf16"], ["bf16", "f32"]] as const) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          // bf16-exact inputs so every dtype combination has the same exact products.
          const av = Float32Array.from({ length: m * k }, () => bf16BitsToF32(f32ToBf16Bits(rng.normal())));
          const bv = Float32Array.from({ length: k * n }, () => bf16BitsToF32(f32ToBf16Bits(rng.normal())));
          const start = Float32Array.from({ length: m * n }, () => bf16BitsToF32(f32ToBf16Bits(rng.normal())));
          const a = toDevice(inType, av, transA ? [k, m] : [m, k], offset);
          const b = toDevice(inType, bv, transB ? [n, k] : [k, n], offset);
          const d = toDevice(outType, start, [m, n], offset);
          const label = `M=${m} N=${n} K=${k} offset=${offset} ${inType}->${outType} transA=${transA} transB=${transB}`;
          dev.gemm({ m, n, k, a, b, d, transA, transB, alpha: 0.5, beta: 1 });
          const got = fromDevice(d);
          for (let i = 0; i < m; i++) {
            for (let j = 0; j < n; j++) {
              let sum = 0;
              let magnitude = 0;
              for (let l = 0; l < k; l++) {
                const p = (transA ? av[l * m + i]! : av[i * k + l]!) * (transB ? bv[j * k + l]! : bv[l * n + j]!);
                sum += p;
                magnitude += Math.abs(p);
              }
              const expected = start[i * n + j]! + 0.5 * sum;
              // f32 accumulation in another order; a bf16 output adds its rounding (8 bits of mantissa), and
              // with beta = 1 cuBLASLt may round alpha * AB before adding C: one ulp of the terms, not of the result
              // (seen on the H200: start + 0.5 * AB cancelling to -0.0107 came back as -0.0117).
              const terms = Math.abs(start[i * n + j]!) + 0.5 * magnitude;
              const tolerance = 1e-5 * (magnitude + 1) + (outType === "bf16" ? terms * 2 ** -7 : 0);
              const v = got[i * n + j]!;
              assert.ok(Math.abs(v - expected) <= tolerance, `${label} (${i}, ${j}): ${v} vs ${expected}`);
            }
          }
          for (const t of [a, b, d]) dev.free(t.base);
        }
      }
    }
  }
  dev.synchronize();
}

void test("cuBLASLt GEMM: f32 and bf16 (bf16 and f32 out), all four transposes, beta = 1, against a JS reference", () => {
  checkGemms([
    [64, 128, 96, 0], // aligned
    [37, 23, 129, 0], // odd sizes
  ]);
});

void test("cuBLASLt GEMM on operands that start one element past an allocation (views into larger buffers)", () => {
  checkGemms([[16, 32, 64, 1]]);
});

void test("a 10 TB allocation is a clear out-of-memory error and the device stays usable", () => {
  assert.throws(
    () => dev.alloc(10e12, "a deliberately huge test tensor"),
    (e) =>
      isTunaError(e) &&
      e.code === "GPU" &&
      e.message.includes("out of GPU memory allocating 9.09 TiB") &&
      e.message.includes("for a deliberately huge test tensor") &&
      e.message.includes("per_device_train_batch_size"),
  );
  dev.free(dev.alloc(1024, "after the failure"));
});

void test("timed() measures a region with events", () => {
  const bytes = 256 * 2 ** 20;
  const a = dev.alloc(bytes, "timed");
  const ms = dev.timed(() => {
    for (let i = 0; i < 10; i++) dev.memset(a, i, bytes);
  });
  dev.free(a);
  assert.ok(ms > 0 && ms < 10_000, `${ms} ms`);
});
