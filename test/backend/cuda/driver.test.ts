// Tests for the driver bindings that need no GPU: every prototype parses and names the symbol it claims,
// kernel arguments are packed at their natural alignment, and the launch buffers point at each argument.
import { test } from "node:test";
import assert from "node:assert/strict";
import koffi from "koffi";
import { DRIVER_PROTOTYPES, createLaunchBuffers, packKernelArgs, toDevicePtr } from "../../../src/backend/cuda/driver.ts";
import { NVRTC_PROTOTYPES } from "../../../src/backend/cuda/nvrtc.ts";
import { CUBLASLT_PROTOTYPES } from "../../../src/backend/cuda/cublaslt.ts";
import { isTunaError } from "../../../src/util/errors.ts";
import type { KernelArg } from "../../../src/backend/cuda/types.ts";

void test("every binding's prototype parses, and its symbol is the key (or the key's _v2 entry point)", () => {
  const tables = [DRIVER_PROTOTYPES, NVRTC_PROTOTYPES, CUBLASLT_PROTOTYPES] as const;
  // koffi.proto registers each prototype's name as a type, so each is parsed once.
  const argumentCounts = new Map<string, number>();
  for (const table of tables) {
    for (const [key, entry] of Object.entries(table) as [string, string | readonly string[]][]) {
      const prototypes = typeof entry === "string" ? [entry] : entry;
      for (const prototype of prototypes) {
        const type = koffi.proto(prototype);
        assert.ok(type.proto !== undefined, prototype);
        assert.ok([key, `${key}_v2`].includes(type.proto.name), `${key}: ${prototype}`);
        assert.equal(type.proto.result.name, prototype.startsWith("const char") ? "char *" : "int", prototype);
        argumentCounts.set(type.proto.name, type.proto.arguments.length);
      }
    }
  }
  // cuLaunchKernel takes 11 arguments: f, grid x/y/z, block x/y/z, shared bytes, stream, kernelParams, extra.
  assert.equal(argumentCounts.get("cuLaunchKernel"), 11);
  assert.equal(argumentCounts.get("cublasLtMatmul"), 16);
  assert.equal(argumentCounts.get("cublasLtMatmulAlgoGetHeuristic"), 10);
});

void test("arguments are packed little-endian at their natural alignment", () => {
  const args: KernelArg[] = [
    { ptr: 0x7f0000001000n },
    { i32: -5 },
    { f32: 1.5 },
    { i64: -(2 ** 40) },
    { u32: 4000000000 },
    { ptr: 0x10n },
    { f32: -0.25 },
    { u64: 2n ** 63n + 7n },
  ];
  const view = new DataView(new ArrayBuffer(128));
  const offsets = new Uint32Array(16);
  const bytes = packKernelArgs(args, view, offsets);
  // ptr 0-7, i32 8-11, f32 12-15, i64 16-23, u32 24-27, (pad) ptr 32-39, f32 40-43, (pad) u64 48-55.
  assert.deepEqual([...offsets.subarray(0, args.length)], [0, 8, 12, 16, 24, 32, 40, 48]);
  assert.equal(bytes, 56);
  assert.equal(view.getBigUint64(0, true), 0x7f0000001000n);
  assert.equal(view.getInt32(8, true), -5);
  assert.equal(view.getFloat32(12, true), 1.5);
  assert.equal(view.getBigInt64(16, true), -(2n ** 40n));
  assert.equal(view.getUint32(24, true), 4000000000);
  assert.equal(view.getBigUint64(32, true), 0x10n);
  assert.equal(view.getFloat32(40, true), -0.25);
  assert.equal(view.getBigUint64(48, true), 2n ** 63n + 7n);
  // Bytes as a C compiler lays them out: the i32 -5 is fb ff ff ff.
  assert.deepEqual([...new Uint8Array(view.buffer, 8, 4)], [0xfb, 0xff, 0xff, 0xff]);
});

void test("an argument that does not fit its type, or too many arguments, is an internal error", () => {
  const view = new DataView(new ArrayBuffer(64));
  const offsets = new Uint32Array(16);
  const bad: KernelArg[][] = [[{ i32: 2 ** 31 }], [{ i32: 1.5 }], [{ u32: -1 }], [{ i64: 2 ** 60 }], [{ u64: -1n }]];
  for (const args of bad) {
    assert.throws(() => packKernelArgs(args, view, offsets), (e) => isTunaError(e) && e.code === "INTERNAL", JSON.stringify(args, (_k, v: unknown) => (typeof v === "bigint" ? `${v}n` : v)));
  }
  const many: KernelArg[] = Array.from({ length: 9 }, () => ({ ptr: 1n }));
  assert.throws(() => packKernelArgs(many, view, offsets), /exceed 64 bytes/);
  assert.throws(() => packKernelArgs(many, new DataView(new ArrayBuffer(4096)), new Uint32Array(4)), /at most 4 are supported/);
});

void test("launch buffers: kernelParams[i] holds the native address of argument i", () => {
  const buffers = createLaunchBuffers();
  try {
    buffers.pack([{ ptr: 0xabcdef00n }, { i32: 7 }, { u64: 9n }]);
    const params = koffi.decode(buffers.paramsPtr, "uint64_t", 3) as (number | bigint)[];
    const addresses = params.map((p) => BigInt(p));
    assert.equal(addresses[1]! - addresses[0]!, 8n);
    assert.equal(addresses[2]! - addresses[0]!, 16n);
    assert.equal(BigInt(koffi.decode(addresses[0]!, "uint64_t") as number | bigint), 0xabcdef00n);
    assert.equal(koffi.decode(addresses[1]!, "int32_t"), 7);
    assert.equal(BigInt(koffi.decode(addresses[2]!, "uint64_t") as number | bigint), 9n);
    // A second launch reuses the same memory.
    buffers.pack([{ i32: -1 }]);
    assert.equal(BigInt(koffi.decode(buffers.paramsPtr, "uint64_t") as number | bigint), addresses[0]);
    assert.equal(koffi.decode(addresses[0]!, "int32_t"), -1);
  } finally {
    buffers.free();
  }
});

void test("device addresses from koffi: small ones come as numbers, large as bigint; 0 is an error", () => {
  assert.equal(toDevicePtr(0x7f0000000000, "x"), 0x7f0000000000n);
  assert.equal(toDevicePtr(2n ** 60n, "x"), 2n ** 60n);
  assert.throws(() => toDevicePtr(0, "cuMemAlloc_v2"), /cuMemAlloc_v2 returned device address 0/);
});
