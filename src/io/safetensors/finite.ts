// Finding NaN and infinity in a stored float tensor from its raw bytes, without decoding it: corrupt or
// diverged weights are named at load instead of training on NaN or writing a NaN model.
//
// An exponent field is all ones exactly when adding one to its lowest bit carries out of it: for bf16,
// ((h & 0x7f80) + 0x0080) & 0x8000. Two bf16/f16 values share a 32-bit word without carrying into each
// other, so a scan ORs that over a block of words and looks closer only when the block has one (about
// 0.1 ns a value, so a 7B model adds a second or two to its load).
import type { SafetensorsDtype } from "./dtypes.ts";

const BLOCK = 4096;

/** Index of the first NaN or ±inf element of a little-endian float tensor, -1 when all are finite (or not float). */
export function firstNonFinite(bytes: Uint8Array, dtype: SafetensorsDtype): number {
  switch (dtype) {
    case "F32":
      return scan(words(bytes), 0x7f800000, 0x00800000, 0x80000000, 1, (w) => w);
    case "F64": {
      // Little-endian: the high word of element i is word 2i + 1; the low words match nothing (mask 0).
      return scan(words(bytes), 0x7ff00000, 0x00100000, 0x80000000, 2, (w) => w >> 1, true);
    }
    case "BF16":
      return halves(bytes, 0x7f80);
    case "F16":
      return halves(bytes, 0x7c00);
    default:
      return -1;
  }
}

function words(bytes: Uint8Array): Uint32Array {
  const source = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  return new Uint32Array(source.buffer, source.byteOffset, Math.floor(source.byteLength / 4));
}

/**
 * Index (by `toIndex` of the word index) of the first word whose masked field is all ones; words OR'd in
 * blocks first. With `oddOnly` only odd words count (the high halves of float64 values).
 */
function scan(w: Uint32Array, mask: number, one: number, carry: number, stride: number, toIndex: (word: number) => number, oddOnly = false): number {
  const start = oddOnly ? 1 : 0;
  for (let b = start; b < w.length; b += BLOCK * stride) {
    const end = Math.min(w.length, b + BLOCK * stride);
    let acc = 0;
    for (let i = b; i < end; i += stride) acc |= (w[i]! & mask) + one;
    if ((acc & carry) !== 0) {
      for (let i = b; i < end; i += stride) if ((((w[i]! & mask) + one) & carry) !== 0) return toIndex(i);
    }
  }
  return -1;
}

function halves(bytes: Uint8Array, mask: number): number {
  const source = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  const n = Math.floor(source.byteLength / 2);
  const w = new Uint32Array(source.buffer, source.byteOffset, n >> 1);
  const one = mask & -mask; // lowest exponent bit
  const pairMask = (mask << 16) | mask;
  const pairOne = (one << 16) | one;
  const pairCarry = 0x80008000;
  for (let b = 0; b < w.length; b += BLOCK) {
    const end = Math.min(w.length, b + BLOCK);
    let acc = 0;
    for (let i = b; i < end; i++) acc |= (w[i]! & pairMask) + pairOne;
    if ((acc & pairCarry) !== 0) {
      for (let i = b; i < end; i++) {
        const v = w[i]!;
        if ((((v & mask) + one) & 0x8000) !== 0) return 2 * i;
        if (((((v >>> 16) & mask) + one) & 0x8000) !== 0) return 2 * i + 1;
      }
    }
  }
  if (n % 2 === 1) {
    const last = source[2 * n - 2]! | (source[2 * n - 1]! << 8);
    if ((((last & mask) + one) & 0x8000) !== 0) return n - 1;
  }
  return -1;
}

/** "NaN", "+inf" or "-inf" for the element at `index` (found by firstNonFinite). */
export function describeNonFinite(bytes: Uint8Array, dtype: SafetensorsDtype, index: number): string {
  const size = dtype === "F64" ? 8 : dtype === "F32" ? 4 : 2;
  const view = new DataView(bytes.buffer, bytes.byteOffset + index * size, size);
  // The sign is the top bit; the mantissa (all bits below the exponent) is zero for infinity.
  const high = size === 8 ? view.getUint32(4, true) : size === 4 ? view.getUint32(0, true) : view.getUint16(0, true);
  const low = size === 8 ? view.getUint32(0, true) : 0;
  const mantissaBits = { F64: 0x000fffff, F32: 0x007fffff, BF16: 0x007f, F16: 0x03ff }[dtype as "F64" | "F32" | "BF16" | "F16"];
  const isNaN = (high & mantissaBits) !== 0 || low !== 0;
  const negative = (size === 2 ? high & 0x8000 : high & 0x80000000) !== 0;
  return isNaN ? "NaN" : negative ? "-inf" : "+inf";
}
