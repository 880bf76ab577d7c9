// The CUDA op wrappers against a recording fake device (no GPU): every launch must match its kernel's C
// signature (argument count and kinds), use a valid grid and block, and free its scratch; checks and fill
// encodings behave as the CPU backend's do.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { DType } from "../../../src/backend/types.ts";
import type { CudaDevice, DeviceTensor, Dim3, KernelArg } from "../../../src/backend/cuda/types.ts";
import { DTYPE_BYTES } from "../../../src/backend/cuda/types.ts";
import { isTunaError } from "../../../src/util/errors.ts";
import { add, addBias, biasBackward, dropoutApply, dropoutMask, scale, softcap, swigluBackward, swigluForward } from "../../../src/backend/cuda/ops/elementwise.ts";
import { doraBackward, doraForward, rowNorms } from "../../../src/backend/cuda/ops/dora.ts";
import { embeddingBackward, embeddingForward } from "../../../src/backend/cuda/ops/embedding.ts";
import { crossEntropyBackward, crossEntropyForward } from "../../../src/backend/cuda/ops/loss.ts";
import { convert, fill } from "../../../src/backend/cuda/ops/memory.ts";
import { rmsnormBackward, rmsnormForward } from "../../../src/backend/cuda/ops/norm.ts";
import { adamwUpdate, sumSquares } from "../../../src/backend/cuda/ops/optimizer.ts";
import { dequantize4bit, quantize4bit } from "../../../src/backend/cuda/ops/quant.ts";
import { ropeBackward, ropeForward } from "../../../src/backend/cuda/ops/rope.ts";
import { cuFiles, kernelSignatures, type ParamKind } from "./kernel-source.ts";

interface Launch {
  file: string;
  kernel: string;
  grid: Dim3;
  block: Dim3;
  sharedBytes: number;
  args: readonly KernelArg[];
}

interface FakeDevice {
  dev: CudaDevice;
  launches: Launch[];
  memsets: { ptr: bigint; value: number; bytes: number }[];
  liveScratch: () => number;
  tensor: (dtype: DType, shape: readonly number[]) => DeviceTensor;
}

const signatures = new Map(cuFiles().map((f) => [f, kernelSignatures(f)]));
const DEFAULT_SHARED = 48 * 1024;

function argKind(a: KernelArg): ParamKind {
  return Object.keys(a)[0] as ParamKind;
}

function fakeDevice(sumSquaresResult = 0): FakeDevice {
  const launches: Launch[] = [];
  const memsets: FakeDevice["memsets"] = [];
  const live = new Set<bigint>();
  const sharedLimit = new Map<string, number>();
  // Tensors and scratch get disjoint, 256-byte aligned addresses in one fake address space.
  let next = 1n << 32n;
  const reserve = (bytes: number): bigint => {
    const p = next;
    next += BigInt(Math.ceil(Math.max(bytes, 1) / 256) * 256);
    return p;
  };
  const unused = (what: string) => (): never => assert.fail(`the op wrappers should not call ${what}`);
  const dev: CudaDevice = {
    index: 0,
    name: "fake H200",
    arch: "sm_90",
    multiprocessorCount: 132,
    alloc(bytes) {
      assert.ok(Number.isSafeInteger(bytes) && bytes > 0, `alloc of ${bytes} bytes`);
      const p = reserve(bytes);
      live.add(p);
      return p;
    },
    free(ptr) {
      assert.ok(live.delete(ptr), `free of ${ptr}, not a live scratch allocation`);
    },
    memoryStats: unused("memoryStats"),
    resetPeak: unused("resetPeak"),
    upload(dst) {
      // quantize4bit sends its threshold table into a scratch it allocated; nothing else uploads.
      assert.ok(live.has(dst), "uploads go only into live scratch allocations");
    },
    download(dst, src) {
      assert.ok(dst instanceof Float64Array && dst.length === 1, "sumSquares downloads one double");
      assert.ok([...live].some((p) => src >= p && src < next), "download from a live scratch allocation");
      dst[0] = sumSquaresResult;
    },
    copy: unused("copy"),
    memset(ptr, value, bytes) {
      memsets.push({ ptr, value, bytes });
    },
    module(file) {
      const kernels = signatures.get(file);
      assert.ok(kernels !== undefined, `module("${file}") is not a file in kernels/`);
      return {
        fn(name) {
          const params = kernels.get(name);
          assert.ok(params !== undefined, `${file} has no extern "C" __global__ ${name}`);
          const key = `${file}:${name}`;
          return {
            name,
            setMaxDynamicSharedBytes(bytes) {
              assert.ok(bytes <= 227 * 1024, `${name}: ${bytes} bytes of shared memory is above sm_90's 227 KiB`);
              sharedLimit.set(key, bytes);
            },
            launch(grid, block, sharedBytes, args) {
              const where = `${file} ${name}`;
              assert.deepEqual(args.map(argKind), params, `${where}: argument kinds do not match the C parameters`);
              assert.ok(grid.every((g) => Number.isInteger(g) && g >= 1), `${where}: grid ${grid.join("x")}`);
              assert.ok(grid[0] <= 2 ** 31 - 1 && grid[1] <= 65535 && grid[2] <= 65535, `${where}: grid ${grid.join("x")} too large`);
              const threads = block[0] * block[1] * block[2];
              assert.ok(threads >= 32 && threads <= 1024 && threads % 32 === 0, `${where}: block ${block.join("x")}`);
              assert.ok(sharedBytes <= (sharedLimit.get(key) ?? DEFAULT_SHARED), `${where}: ${sharedBytes} shared bytes without raising the limit`);
              launches.push({ file, kernel: name, grid, block, sharedBytes, args });
            },
          };
        },
      };
    },
    gemm: unused("gemm"),
    synchronize: unused("synchronize"),
    timed: unused("timed"),
    dispose: unused("dispose"),
  };
  const tensor = (dtype: DType, shape: readonly number[]): DeviceTensor => {
    const size = shape.reduce((a, b) => a * b, 1);
    return { ptr: reserve(size * DTYPE_BYTES[dtype]), dtype, shape, size };
  };
  return { dev, launches, memsets, liveScratch: () => live.size, tensor };
}

function assertInternal(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => isTunaError(e) && e.code === "INTERNAL" && pattern.test(e.message));
}

void test("every wrapper launches kernels whose arguments match the C signatures, for f32 and bf16 tensors", async () => {
  for (const dt of ["f32", "bf16"] as const) {
    const f = fakeDevice(12.5);
    const { dev, tensor } = f;
    const [N, C, V, H, D, F] = [37, 96, 1000, 4, 16, 160];
    const ids = tensor("i32", [N]);
    embeddingForward(dev, tensor(dt, [N, C]), ids, tensor(dt, [V, C]));
    embeddingBackward(dev, tensor("f32", [V, C]), tensor(dt, [N, C]), ids);
    const x = tensor(dt, [N, C]);
    const rstd = tensor("f32", [N]);
    const w = tensor(dt, [C]);
    rmsnormForward(dev, tensor(dt, [N, C]), rstd, x, w, 1e-6);
    rmsnormBackward(dev, tensor(dt, [N, C]), tensor("f32", [C]), tensor(dt, [N, C]), x, w, rstd, true);
    rmsnormBackward(dev, tensor("f32", [N, C]), null, tensor(dt, [N, C]), x, w, rstd, false);
    const positions = tensor("i32", [N]);
    const invFreq = tensor("f32", [D / 2]);
    ropeForward(dev, tensor(dt, [N, H, D]), positions, invFreq);
    ropeBackward(dev, tensor(dt, [N, H, D]), positions, invFreq);
    const gate = tensor(dt, [N, F]);
    const up = tensor(dt, [N, F]);
    swigluForward(dev, gate, gate, up);
    swigluForward(dev, gate, gate, up, "gelu_tanh");
    softcap(dev, tensor(dt, [N, V]), 30);
    swigluBackward(dev, tensor(dt, [N, F]), tensor(dt, [N, F]), tensor(dt, [N, F]), gate, up);
    add(dev, x, x, tensor("f32", [N, C]));
    scale(dev, x, 0.5);
    dropoutApply(dev, x, x, tensor("u8", [N, C]), 0.1);
    dropoutMask(dev, tensor("u8", [N, C]), 0.1, [1, 2 ** 32 - 1]);
    addBias(dev, tensor(dt, [N, F]), tensor(dt, [F]));
    biasBackward(dev, tensor("f32", [F]), tensor(dt, [N, F]));
    const norms = tensor(dt, [F]);
    const magnitude = tensor("f32", [F]);
    rowNorms(dev, norms, tensor(dt, [F, C]));
    const base = tensor(dt, [N, F]);
    const lora = tensor(dt, [N, F]);
    doraForward(dev, base, base, lora, magnitude, norms);
    doraBackward(dev, tensor("f32", [F]), lora, base, tensor(dt, [N, F]), base, lora, magnitude, norms);
    doraBackward(dev, tensor("f32", [F]), tensor(dt, [N, F]), null, tensor(dt, [N, F]), base, lora, magnitude, norms);
    const logits = tensor(dt, [N, V]);
    const targets = tensor("i32", [N]);
    crossEntropyForward(dev, tensor("f32", [N]), logits, targets);
    crossEntropyBackward(dev, logits, logits, targets, 1 / N);
    dequantize4bit(dev, tensor(dt, [C, F]), { packed: tensor("u8", [(C * F) / 2, 1]), absmax: tensor("f32", [(C * F) / 64]), code: tensor("f32", [16]), blocksize: 64 });
    quantize4bit(dev, tensor("u8", [(C * F) / 2]), tensor("f32", [(C * F) / 64]), tensor(dt, [C, F]), dt === "f32" ? "nf4" : "fp4", 64);
    // 33 elements: not whole 32-element groups, so bf16 takes the generic kernel too.
    dequantize4bit(dev, tensor(dt, [33]), { packed: tensor("u8", [17]), absmax: tensor("f32", [1]), code: tensor("f32", [16]), blocksize: 64 });
    const n = 1234;
    adamwUpdate(dev, tensor("f32", [n]), tensor("f32", [n]), tensor("f32", [n]), tensor("f32", [n]), { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 3 });
    assert.equal(await sumSquares(dev, tensor(dt, [n])), 12.5);
    fill(dev, tensor(dt, [N, C]), 1);
    convert(dev, tensor("f32", [N, C]), tensor(dt, [N, C]));
    const kernels = new Set(f.launches.map((l) => l.kernel));
    for (const file of ["dora.cu", "embedding.cu", "norm.cu", "rope.cu", "elementwise.cu", "loss.cu", "quant.cu", "optimizer.cu", "memory.cu"]) {
      for (const k of signatures.get(file)!.keys()) {
        // fill_u32 only serves 4-byte patterns: the bf16 pass fills through fill_u16.
        // dequantize_4bit_bf16x32 is the bf16-only fast path.
        const notForDtype = (k === "fill_u32" && dt === "bf16") || (k === "fill_u16" && dt === "f32") || (k === "dequantize_4bit_bf16x32" && dt === "f32");
        if (!notForDtype) assert.ok(kernels.has(k), `${file} ${k} was never launched (${dt})`);
      }
    }
    assert.equal(f.liveScratch(), 0, "every scratch allocation is freed");
  }
});

void test("fill encodes the value as the CPU reference does and zero-like patterns become a memset", () => {
  const f = fakeDevice();
  // Expected: the element's bit pattern for the fill kernel, or the byte a memset repeats.
  const cases: [DType, number, { byte: number } | number][] = [
    ["f32", 1, 0x3f800000],
    ["bf16", 1, 0x3f80],
    ["f16", 1, 0x3c00],
    ["f32", 0, { byte: 0 }],
    ["bf16", -0, 0x8000],
    ["i32", -1, { byte: 0xff }],
    ["i32", 5, 5],
    ["u8", 7, { byte: 7 }],
  ];
  for (const [dtype, value, expected] of cases) {
    f.launches.length = 0;
    f.memsets.length = 0;
    const t = f.tensor(dtype, [3, 5]);
    fill(f.dev, t, value);
    if (typeof expected === "object") {
      assert.equal(f.launches.length, 0, `${dtype} ${value}`);
      assert.deepEqual(f.memsets, [{ ptr: t.ptr, value: expected.byte, bytes: 15 * DTYPE_BYTES[dtype] }]);
    } else {
      assert.equal(f.memsets.length, 0, `${dtype} ${value}`);
      assert.deepEqual(f.launches[0]!.args[1], { u32: expected });
    }
  }
  assertInternal(() => { fill(f.dev, f.tensor("i32", [2]), 1.5); }, /not an i32 value/);
  assertInternal(() => { fill(f.dev, f.tensor("u8", [2]), 256); }, /not a u8 value/);
});

void test("the wrappers reject what the CPU backend rejects, naming the op", () => {
  const { dev, tensor } = fakeDevice();
  assertInternal(() => { embeddingBackward(dev, tensor("bf16", [10, 4]), tensor("f32", [3, 4]), tensor("i32", [3])); }, /embeddingBackward: dtable dtype bf16 is not f32/);
  assertInternal(() => { rmsnormForward(dev, tensor("f32", [2, 8]), tensor("f32", [2]), tensor("f32", [2, 8]), tensor("f32", [7]), 1e-5); }, /rmsnormForward: weight shape \[7\]/);
  assertInternal(() => { ropeForward(dev, tensor("f32", [2, 1, 7]), tensor("i32", [2]), tensor("f32", [3])); }, /ropeForward: x head dim 7 is odd/);
  assertInternal(() => { dropoutApply(dev, tensor("f32", [4]), tensor("f32", [4]), tensor("u8", [4]), 1); }, /dropoutApply: p is 1/);
  assertInternal(() => { crossEntropyForward(dev, tensor("f32", [2]), tensor("f32", [2, 5]), tensor("f32", [2])); }, /crossEntropyForward: targets dtype f32 is not i32/);
  assertInternal(() => { adamwUpdate(dev, tensor("f32", [4]), tensor("f32", [4]), tensor("f32", [4]), tensor("f32", [4]), { lr: 1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0, step: 0 }); }, /adamwUpdate: step is 0/);
  assertInternal(() => { dequantize4bit(dev, tensor("f32", [128]), { packed: tensor("u8", [64]), absmax: tensor("f32", [3]), code: tensor("f32", [16]), blocksize: 64 }); }, /dequantize4bit: absmax shape \[3\] does not match \[2\]/);
  assertInternal(() => { dequantize4bit(dev, tensor("f32", [9]), { packed: tensor("u8", [4]), absmax: tensor("f32", [1]), code: tensor("f32", [16]), blocksize: 64 }); }, /^dequantize4bit: packed \(element count\) shape \[4\] does not match \[5\]$/);
  assertInternal(() => { adamwUpdate(dev, tensor("f32", [4]), tensor("f32", [3]), tensor("f32", [4]), tensor("f32", [4]), { lr: 1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0, step: 1 }); }, /^adamwUpdate: grads has 3 elements, params has 4$/);
  assertInternal(() => { convert(dev, tensor("f32", [4]), tensor("i32", [4])); }, /convert: src dtype i32/);
});

void test("aliasing: an exact alias is allowed where the contract says so, any other overlap is refused", () => {
  const { dev, tensor } = fakeDevice();
  const a = tensor("f32", [8]);
  add(dev, a, a, tensor("f32", [8]));
  const logits = tensor("bf16", [2, 16]);
  crossEntropyBackward(dev, logits, logits, tensor("i32", [2]), 1);
  // Eight elements from a[4] on: overlaps a without being it.
  const half: DeviceTensor = { ptr: a.ptr + 16n, dtype: "f32", shape: [8], size: 8 };
  assertInternal(() => { add(dev, half, a, tensor("f32", [8])); }, /add: out shares device memory with a; it may only be exactly the same tensor/);
  const x = tensor("f32", [3, 4]);
  assertInternal(() => { rmsnormForward(dev, x, tensor("f32", [3]), x, tensor("f32", [4]), 1e-5); }, /rmsnormForward: out shares device memory with x; write to a separate tensor/);
  const g = tensor("f32", [6]);
  assertInternal(() => { swigluBackward(dev, g, tensor("f32", [6]), tensor("f32", [6]), g, tensor("f32", [6])); }, /swigluBackward: dgate shares device memory with gate/);
});

void test("launch parameters: dweight scratch in shared memory above 48 KiB, power-of-two blocksizes as a shift, empty tensors launch nothing", () => {
  const f = fakeDevice();
  const C = 16384;
  const x = f.tensor("bf16", [3, C]);
  rmsnormBackward(f.dev, f.tensor("bf16", [3, C]), f.tensor("f32", [C]), f.tensor("bf16", [3, C]), x, f.tensor("bf16", [C]), f.tensor("f32", [3]), false);
  const backward = f.launches.find((l) => l.kernel === "rmsnorm_backward")!;
  assert.equal(backward.sharedBytes, C * 4);
  assert.equal(backward.grid[0], 3, "no more blocks than rows");
  assert.deepEqual(f.launches.find((l) => l.kernel === "rmsnorm_dweight_reduce")!.args[3], { i32: 3 }, "one partial row per block");

  const shiftOf = (blocksize: number): KernelArg => {
    f.launches.length = 0;
    const n = blocksize * 4;
    dequantize4bit(f.dev, f.tensor("bf16", [n]), { packed: f.tensor("u8", [n / 2]), absmax: f.tensor("f32", [4]), code: f.tensor("f32", [16]), blocksize });
    return f.launches[0]!.args.at(-1)!;
  };
  assert.deepEqual(shiftOf(64), { i32: 6 });
  assert.deepEqual(shiftOf(48), { i32: -1 });

  f.launches.length = 0;
  add(f.dev, f.tensor("f32", [0, 4]), f.tensor("f32", [0, 4]), f.tensor("f32", [0, 4]));
  crossEntropyForward(f.dev, f.tensor("f32", [0]), f.tensor("f32", [0, 10]), f.tensor("i32", [0]));
  rmsnormForward(f.dev, f.tensor("f32", [0, 4]), f.tensor("f32", [0]), f.tensor("f32", [0, 4]), f.tensor("f32", [4]), 1e-5);
  assert.equal(f.launches.length, 0);
});
