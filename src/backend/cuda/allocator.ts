// The caching device-memory allocator: blocks from the driver are kept after free and handed out again, so a
// training step makes no cuMemAlloc/cuMemFree calls once warm. Out of memory is a message that says what to change.
import { TunaError } from "../../util/errors.ts";
import { formatMemorySize } from "../../util/memory-size.ts";
import type { DevicePtr, MemoryStats } from "./types.ts";

/** The driver's allocator, injected (tests pass a fake). */
export interface RawDeviceMemory {
  /** A new block of exactly `bytes`, or null when the device is out of memory. Other failures throw. */
  alloc(bytes: number): DevicePtr | null;
  free(ptr: DevicePtr): void;
}

export interface CachingAllocatorOptions {
  raw: RawDeviceMemory;
  /** The GPU's total memory, for stats and the out-of-memory message. */
  totalBytes: number;
  /** Free memory on the device as the driver sees it (other processes included), for the out-of-memory message. */
  deviceFreeBytes?: () => number;
}

export interface CachingAllocator {
  alloc(bytes: number, what: string): DevicePtr;
  free(ptr: DevicePtr): void;
  stats(): MemoryStats;
  resetPeak(): void;
  /** Returns every cached free block to the driver. */
  releaseCached(): void;
  /** Returns every block, live ones included, to the driver (device teardown). */
  releaseAll(): void;
}

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

/** Requests up to this size are rounded to SMALL_GRANULE, larger ones to LARGE_GRANULE. */
export const SMALL_LIMIT = MIB;
export const SMALL_GRANULE = 512;
export const LARGE_GRANULE = 2 * MIB;
/** A cached block is reused for a smaller request when at most this fraction of it would be wasted. */
const MAX_WASTE_FRACTION = 0.25;

/** The block size a request of `bytes` gets: 512-byte steps up to 1 MiB, 2 MiB steps above. Never 0. */
export function roundAllocationSize(bytes: number): number {
  const granule = bytes <= SMALL_LIMIT ? SMALL_GRANULE : LARGE_GRANULE;
  return Math.max(granule, Math.ceil(bytes / granule) * granule);
}

/** Index of the first element of the ascending `sizes` that is >= `size` (sizes.length when none). */
function lowerBound(sizes: readonly number[], size: number): number {
  let lo = 0;
  let hi = sizes.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sizes[mid]! < size) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export function createCachingAllocator(options: CachingAllocatorOptions): CachingAllocator {
  const { raw, totalBytes } = options;
  const live = new Map<DevicePtr, number>(); // ptr -> block size
  const freeBySize = new Map<number, DevicePtr[]>();
  const freeSizes: number[] = []; // ascending; sizes with at least one cached block
  let inUse = 0;
  let peakInUse = 0;
  let reserved = 0;
  let peakReserved = 0;

  const takeCached = (size: number): { ptr: DevicePtr; size: number } | undefined => {
    const i = lowerBound(freeSizes, size);
    const found = freeSizes[i];
    if (found === undefined || found - size > found * MAX_WASTE_FRACTION) return undefined;
    const list = freeBySize.get(found)!;
    const ptr = list.pop()!;
    if (list.length === 0) {
      freeBySize.delete(found);
      freeSizes.splice(i, 1);
    }
    return { ptr, size: found };
  };

  const cache = (ptr: DevicePtr, size: number): void => {
    const list = freeBySize.get(size);
    if (list !== undefined) {
      list.push(ptr);
      return;
    }
    freeBySize.set(size, [ptr]);
    freeSizes.splice(lowerBound(freeSizes, size), 0, size);
  };

  const releaseCached = (): void => {
    for (const [size, list] of freeBySize) {
      while (list.length > 0) {
        raw.free(list.pop()!);
        reserved -= size;
      }
    }
    freeBySize.clear();
    freeSizes.length = 0;
  };

  const outOfMemory = (bytes: number, size: number, what: string): TunaError => {
    let free = "";
    if (options.deviceFreeBytes !== undefined) {
      const deviceFree = options.deviceFreeBytes();
      free = `, ${formatMemorySize(deviceFree)} free on the device`;
      const others = totalBytes - deviceFree - reserved;
      if (others > GIB) free += ` (about ${formatMemorySize(others)} is held outside tuna's allocator: other processes or libraries; see nvidia-smi)`;
    }
    return new TunaError(
      "GPU",
      `out of GPU memory allocating ${formatMemorySize(bytes)}${size !== bytes ? ` (a ${formatMemorySize(size)} block)` : ""} for ${what}: ` +
        `${formatMemorySize(inUse)} in use by tensors, ${formatMemorySize(reserved)} reserved by tuna, of the GPU's ${formatMemorySize(totalBytes)}${free}. ` +
        "To use less memory: lower per_device_train_batch_size or max_seq_length, set gradient_checkpointing true, or use_4bit_quantization true (QLoRA).",
    );
  };

  return {
    alloc(bytes, what) {
      if (!Number.isSafeInteger(bytes) || bytes < 0) throw new TunaError("INTERNAL", `allocation of ${bytes} bytes for ${what}: not a byte count`);
      const wanted = roundAllocationSize(bytes);
      let block = takeCached(wanted);
      if (block === undefined) {
        let ptr = raw.alloc(wanted);
        if (ptr === null) {
          // Cached blocks of other sizes may be what stands in the way: give them back and try once more.
          releaseCached();
          ptr = raw.alloc(wanted);
          if (ptr === null) throw outOfMemory(bytes, wanted, what);
        }
        reserved += wanted;
        peakReserved = Math.max(peakReserved, reserved);
        block = { ptr, size: wanted };
      }
      if (live.has(block.ptr)) throw new TunaError("INTERNAL", `the driver returned address 0x${block.ptr.toString(16)} twice`);
      live.set(block.ptr, block.size);
      inUse += block.size;
      peakInUse = Math.max(peakInUse, inUse);
      return block.ptr;
    },

    free(ptr) {
      const size = live.get(ptr);
      if (size === undefined) {
        throw new TunaError("INTERNAL", `free of device address 0x${ptr.toString(16)}, which is not a live allocation (freed twice, or never allocated here)`);
      }
      live.delete(ptr);
      inUse -= size;
      cache(ptr, size);
    },

    stats() {
      return { inUseBytes: inUse, peakInUseBytes: peakInUse, reservedBytes: reserved, peakReservedBytes: peakReserved, totalBytes };
    },

    resetPeak() {
      peakInUse = inUse;
      peakReserved = reserved;
    },

    releaseCached,

    releaseAll() {
      releaseCached();
      for (const [ptr, size] of live) {
        raw.free(ptr);
        reserved -= size;
      }
      live.clear();
      inUse = 0;
    },
  };
}
