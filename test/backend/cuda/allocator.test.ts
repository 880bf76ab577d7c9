// Tests for the caching allocator over a fake driver: size rounding, reuse of freed blocks, the statistics,
// the release-and-retry on out of memory, and the messages of a real out of memory and of a bad free.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createCachingAllocator, roundAllocationSize, type RawDeviceMemory } from "../../../src/backend/cuda/allocator.ts";
import { formatMemorySize } from "../../../src/util/memory-size.ts";
import type { DevicePtr } from "../../../src/backend/cuda/types.ts";
import { isTunaError } from "../../../src/util/errors.ts";

const MIB = 2 ** 20;
const GIB = 2 ** 30;

/** A driver with `capacity` bytes that hands out increasing addresses and records every call. */
function fakeDriver(capacity: number): RawDeviceMemory & { used: () => number; allocs: number[]; frees: DevicePtr[] } {
  const blocks = new Map<DevicePtr, number>();
  let next = 0x7f0000000000n;
  let used = 0;
  const allocs: number[] = [];
  const frees: DevicePtr[] = [];
  return {
    allocs,
    frees,
    used: () => used,
    alloc(bytes) {
      allocs.push(bytes);
      if (used + bytes > capacity) return null;
      const ptr = next;
      next += BigInt(bytes) + 0x1000n;
      blocks.set(ptr, bytes);
      used += bytes;
      return ptr;
    },
    free(ptr) {
      const bytes = blocks.get(ptr);
      assert.ok(bytes !== undefined, `fake driver: free of unknown ${ptr}`);
      blocks.delete(ptr);
      used -= bytes;
      frees.push(ptr);
    },
  };
}

void test("sizes round to 512 bytes up to 1 MiB and to 2 MiB above, never to 0", () => {
  assert.equal(roundAllocationSize(0), 512);
  assert.equal(roundAllocationSize(1), 512);
  assert.equal(roundAllocationSize(512), 512);
  assert.equal(roundAllocationSize(513), 1024);
  assert.equal(roundAllocationSize(MIB), MIB);
  assert.equal(roundAllocationSize(MIB + 1), 2 * MIB);
  assert.equal(roundAllocationSize(3 * MIB), 4 * MIB);
  assert.equal(roundAllocationSize(4 * MIB), 4 * MIB);
});

void test("a freed block is reused by a request of its size without asking the driver", () => {
  const raw = fakeDriver(GIB);
  const alloc = createCachingAllocator({ raw, totalBytes: GIB });
  const a = alloc.alloc(1000, "a");
  alloc.free(a);
  const b = alloc.alloc(1024, "b"); // same 1024-byte block
  assert.equal(b, a);
  assert.deepEqual(raw.allocs, [1024]);
  const c = alloc.alloc(1000, "c"); // the block is taken: a new one
  assert.notEqual(c, b);
  assert.deepEqual(raw.allocs, [1024, 1024]);
});

void test("best fit: the smallest cached block that fits, and none that would waste more than a quarter", () => {
  const raw = fakeDriver(GIB);
  const alloc = createCachingAllocator({ raw, totalBytes: GIB });
  const big = alloc.alloc(16 * MIB, "big");
  const mid = alloc.alloc(8 * MIB, "mid");
  alloc.free(big);
  alloc.free(mid);
  assert.equal(alloc.alloc(7 * MIB, "fits mid"), mid); // 8 MiB block, 1/8 wasted
  assert.equal(raw.allocs.length, 2);
  const fresh = alloc.alloc(6 * MIB, "would waste 10 of 16 MiB");
  assert.notEqual(fresh, big);
  assert.deepEqual(raw.allocs, [16 * MIB, 8 * MIB, 6 * MIB]);
});

void test("statistics: in use and reserved, their peaks, and resetPeak", () => {
  const raw = fakeDriver(GIB);
  const alloc = createCachingAllocator({ raw, totalBytes: GIB });
  const a = alloc.alloc(4 * MIB, "a");
  const b = alloc.alloc(2 * MIB, "b");
  alloc.free(a);
  assert.deepEqual(alloc.stats(), { inUseBytes: 2 * MIB, peakInUseBytes: 6 * MIB, reservedBytes: 6 * MIB, peakReservedBytes: 6 * MIB, totalBytes: GIB });
  alloc.resetPeak();
  assert.equal(alloc.stats().peakInUseBytes, 2 * MIB);
  alloc.releaseCached();
  assert.equal(alloc.stats().reservedBytes, 2 * MIB);
  assert.equal(raw.used(), 2 * MIB);
  alloc.free(b);
  alloc.releaseAll();
  assert.equal(raw.used(), 0);
  assert.equal(alloc.stats().reservedBytes, 0);
});

void test("out of memory: cached blocks are given back and the allocation retried once", () => {
  const raw = fakeDriver(10 * MIB);
  const alloc = createCachingAllocator({ raw, totalBytes: 10 * MIB });
  const a = alloc.alloc(6 * MIB, "a");
  alloc.free(a); // 6 MiB cached
  const b = alloc.alloc(8 * MIB, "b"); // 6 + 8 > 10: fails, frees the cache, succeeds
  assert.deepEqual(raw.frees, [a]);
  assert.deepEqual(raw.allocs, [6 * MIB, 8 * MIB, 8 * MIB]);
  assert.equal(alloc.stats().reservedBytes, 8 * MIB);
  alloc.free(b);
});

void test("a real out of memory says what was asked for, for what, what is used and what lowers memory", () => {
  const raw = fakeDriver(64 * MIB);
  const alloc = createCachingAllocator({ raw, totalBytes: 80 * GIB, deviceFreeBytes: () => 32 * MIB });
  alloc.alloc(30 * MIB, "weights");
  assert.throws(
    () => alloc.alloc(10 * 1e12, "activations of layer 3"),
    (e) => {
      assert.ok(isTunaError(e) && e.code === "GPU");
      assert.match(e.message, /out of GPU memory allocating 9\.09 TiB/);
      assert.match(e.message, /for activations of layer 3/);
      assert.match(e.message, /30\.0 MiB in use by tensors, 30\.0 MiB reserved by tuna, of the GPU's 80\.00 GiB/);
      assert.match(e.message, /32\.0 MiB free on the device \(about 79\.94 GiB is held outside tuna's allocator/);
      for (const option of ["per_device_train_batch_size", "max_seq_length", "gradient_checkpointing", "use_4bit_quantization"]) assert.ok(e.message.includes(option), option);
      return true;
    },
  );
});

void test("freeing an address that is not live is an internal error", () => {
  const alloc = createCachingAllocator({ raw: fakeDriver(GIB), totalBytes: GIB });
  assert.throws(() => { alloc.free(0x1234n); }, (e) => isTunaError(e) && e.code === "INTERNAL" && e.message.includes("0x1234"));
  const a = alloc.alloc(10, "a");
  alloc.free(a);
  assert.throws(() => { alloc.free(a); }, /not a live allocation/);
  assert.throws(() => alloc.alloc(-1, "x"), (e) => isTunaError(e) && e.code === "INTERNAL");
});

void test("sizes are written in binary units", () => {
  assert.equal(formatMemorySize(512), "512 B");
  assert.equal(formatMemorySize(1536), "1.5 KiB");
  assert.equal(formatMemorySize(12 * MIB), "12.0 MiB");
  assert.equal(formatMemorySize(1.5 * GIB), "1.50 GiB");
  assert.equal(formatMemorySize(10e12), "9.09 TiB");
});
