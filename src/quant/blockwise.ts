// Blockwise quantization exactly as bitsandbytes' CUDA kernels compute it (specs/nf4_fp4.md §2, §3.1):
// 4-bit NF4/FP4 packed two codes a byte, 8-bit over a 256-entry map, one float32 absmax per block.
import { TunaError } from "../util/errors.ts";
import { f32BitsToBf16Bits } from "../util/half.ts";
import { code4bit, code8bit, fp4Code, nf4Code, type QuantType4bit } from "./codes.ts";

const f = Math.fround;

/** The blocksizes bnb accepts (quantize_4bit raises ValueError for any other). */
export const BLOCKSIZES: readonly number[] = [32, 64, 128, 256, 512, 1024, 2048, 4096];
/** bnb's default for 4-bit (quantize_4bit, Params4bit, and every transformers load). */
export const DEFAULT_BLOCKSIZE_4BIT = 64;
/** bnb's quantize_blockwise default (8-bit optimizer states); double quantization passes 256. */
export const DEFAULT_BLOCKSIZE_8BIT = 4096;

const NEG_FLT_MAX = -3.4028234663852886e38;

export function isBlocksize(blocksize: number): boolean {
  return BLOCKSIZES.includes(blocksize);
}

export interface Blockwise4bit {
  /** ceil(n/2) bytes; element 2j in the high nibble of byte j, element 2j+1 in the low nibble. */
  packed: Uint8Array;
  /** One float32 per block of `blocksize` elements (the last block may be partial). */
  absmax: Float32Array;
}

export interface Blockwise8bit {
  codes: Uint8Array;
  absmax: Float32Array;
}

function checkBlocksize(blocksize: number): void {
  if (!isBlocksize(blocksize)) {
    throw new TunaError("CONFIG_INVALID", `blocksize ${blocksize} is not one bitsandbytes supports; use one of ${BLOCKSIZES.join(", ")}.`);
  }
}

/**
 * The kernel's block absmax: per-thread fmaxf from -FLT_MAX (NaN is skipped), then a block max.
 * A partial last block also reduces over the zeros the kernel pads it with, so it starts from 0.
 * An all-NaN full block therefore has absmax -FLT_MAX, and an all-zero block 0 (reciprocal +inf).
 */
function blockAbsmax(x: Float32Array, start: number, end: number, full: boolean): number {
  let m = full ? NEG_FLT_MAX : 0;
  for (let i = start; i < end; i++) {
    const a = Math.abs(x[i]!);
    if (a > m) m = a;
  }
  return m;
}

/**
 * Quantizes x[0, len) into packed bytes from packedStart and absmax from absmaxStart. Every block but
 * the last is full. Each value is scaled as float32(x * float32(1 / absmax)), a multiply by the
 * reciprocal as the kernel does; the pad nibble of an odd count is the code of the padding zero.
 */
export function quantizeBlocks4bit(
  x: Float32Array,
  len: number,
  blocksize: number,
  quantType: QuantType4bit,
  out: Blockwise4bit,
  packedStart: number,
  absmaxStart: number,
): void {
  const lut = quantType === "nf4" ? nf4Lut() : fp4Lut();
  const codeOf = quantType === "nf4" ? nf4Code : fp4Code;
  const { packed, absmax } = out;
  const scaled = new Float32Array(blocksize + 1);
  const scaledBits = new Uint32Array(scaled.buffer);
  for (let b0 = 0, blk = absmaxStart; b0 < len; b0 += blocksize, blk++) {
    const b1 = Math.min(b0 + blocksize, len);
    const count = b1 - b0;
    const m = blockAbsmax(x, b0, b1, count === blocksize);
    absmax[blk] = m;
    const inv = f(1 / m);
    // The store rounds each exact product to float32: scaled[j] = float32(x * inv).
    for (let j = 0; j < count; j++) scaled[j] = x[b0 + j]! * inv;
    scaled[count] = 0 * inv; // the kernel's padding zero, used when count is odd
    let p = packedStart + (b0 >> 1);
    for (let j = 0; j < count; j += 2) {
      let hi = lut[scaledBits[j]! >>> 16]!;
      if (hi === AMBIGUOUS) hi = codeOf(scaled[j]!);
      let lo = lut[scaledBits[j + 1]! >>> 16]!;
      if (lo === AMBIGUOUS) lo = codeOf(scaled[j + 1]!);
      packed[p++] = (hi << 4) | lo;
    }
  }
}

// The code trees are monotone in x (FP4: in |x| for one sign), so every float32 whose top 16 bits
// match has one code unless the range of those bits straddles a threshold, holds both -0.0 and
// negatives, or is NaN. The tables give that code, or AMBIGUOUS to ask the tree; a branchy tree
// per value is several times slower on random data. Exactness comes from the trees themselves.
const AMBIGUOUS = 255;
let nf4Table: Uint8Array | undefined;
let fp4Table: Uint8Array | undefined;

function buildLut(codeOf: (x: number) => number): Uint8Array {
  const table = new Uint8Array(65536);
  const probe = new Float32Array(2);
  const probeBits = new Uint32Array(probe.buffer);
  for (let h = 0; h < 65536; h++) {
    probeBits[0] = (h << 16) >>> 0;
    probeBits[1] = ((h << 16) | 0xffff) >>> 0;
    const isNaNRange = (h & 0x7f80) === 0x7f80;
    const first = codeOf(probe[0]!);
    table[h] = !isNaNRange && first === codeOf(probe[1]!) ? first : AMBIGUOUS;
  }
  return table;
}

function nf4Lut(): Uint8Array {
  nf4Table ??= buildLut(nf4Code);
  return nf4Table;
}

function fp4Lut(): Uint8Array {
  fp4Table ??= buildLut(fp4Code);
  return fp4Table;
}

/** Allocates the outputs for n elements. */
export function allocate4bit(n: number, blocksize: number): Blockwise4bit {
  checkBlocksize(blocksize);
  return { packed: new Uint8Array(Math.ceil(n / 2)), absmax: new Float32Array(Math.ceil(n / blocksize)) };
}

/** bnb quantize_4bit on the flattened (row-major) values x. */
export function quantize4bit(x: Float32Array, quantType: QuantType4bit, blocksize: number = DEFAULT_BLOCKSIZE_4BIT): Blockwise4bit {
  const out = allocate4bit(x.length, blocksize);
  quantizeBlocks4bit(x, x.length, blocksize, quantType, out, 0, 0);
  return out;
}

function checkSizes(what: string, n: number, blocksize: number, codesLength: number, codesNeeded: number, absmax: Float32Array): void {
  checkBlocksize(blocksize);
  const blocks = Math.ceil(n / blocksize);
  if (codesLength < codesNeeded || absmax.length < blocks) {
    throw new TunaError(
      "INTERNAL",
      `${what} of ${n} elements (blocksize ${blocksize}) needs ${codesNeeded} code bytes and ${blocks} absmax values, ` +
        `got ${codesLength} and ${absmax.length}`,
    );
  }
}

/**
 * bnb dequantize_4bit: W[i] = float32(code[nibble(i)] * absmax[i / blocksize]), row-major.
 * FP4 decodes code 8 to -0.0 as the CUDA kernel does.
 */
export function dequantize4bit(
  packed: Uint8Array,
  absmax: Float32Array,
  n: number,
  quantType: QuantType4bit,
  blocksize: number = DEFAULT_BLOCKSIZE_4BIT,
  out: Float32Array = new Float32Array(n),
): Float32Array {
  checkSizes("dequantize4bit", n, blocksize, packed.length, Math.ceil(n / 2), absmax);
  const lut = code4bit(quantType);
  const scaled = new Float32Array(16);
  for (let b0 = 0, blk = 0; b0 < n; b0 += blocksize, blk++) {
    const a = absmax[blk]!;
    for (let k = 0; k < 16; k++) scaled[k] = lut[k]! * a; // the store rounds the exact product to float32
    const b1 = Math.min(b0 + blocksize, n);
    let p = b0 >> 1;
    let i = b0;
    for (; i + 1 < b1; i += 2) {
      const byte = packed[p++]!;
      out[i] = scaled[byte >> 4]!;
      out[i + 1] = scaled[byte & 15]!;
    }
    if (i < b1) out[i] = scaled[packed[p]! >> 4]!;
  }
  return out;
}

/** dequantize4bit into bfloat16 bits: the float32 product rounded to nearest even, as the kernel stores it. */
export function dequantize4bitBf16(
  packed: Uint8Array,
  absmax: Float32Array,
  n: number,
  quantType: QuantType4bit,
  blocksize: number = DEFAULT_BLOCKSIZE_4BIT,
  out: Uint16Array = new Uint16Array(n),
): Uint16Array {
  checkSizes("dequantize4bitBf16", n, blocksize, packed.length, Math.ceil(n / 2), absmax);
  const lut = code4bit(quantType);
  const scaled = new Float32Array(16);
  const scaledBits = new Uint32Array(scaled.buffer);
  const bf16 = new Uint16Array(16);
  for (let b0 = 0, blk = 0; b0 < n; b0 += blocksize, blk++) {
    const a = absmax[blk]!;
    for (let k = 0; k < 16; k++) {
      scaled[k] = lut[k]! * a;
      bf16[k] = f32BitsToBf16Bits(scaledBits[k]!);
    }
    const b1 = Math.min(b0 + blocksize, n);
    let p = b0 >> 1;
    let i = b0;
    for (; i + 1 < b1; i += 2) {
      const byte = packed[p++]!;
      out[i] = bf16[byte >> 4]!;
      out[i + 1] = bf16[byte & 15]!;
    }
    if (i < b1) out[i] = bf16[packed[p]! >> 4]!;
  }
  return out;
}

/** bnb quantize_blockwise (8-bit, non-stochastic) over a sorted 256-entry map such as the dynamic map. */
export function quantizeBlockwise8bit(x: Float32Array, code: Float32Array, blocksize: number = DEFAULT_BLOCKSIZE_8BIT): Blockwise8bit {
  checkBlocksize(blocksize);
  if (code.length !== 256) throw new TunaError("INTERNAL", `an 8-bit code map has 256 entries, got ${code.length}`);
  const n = x.length;
  const codes = new Uint8Array(n);
  const absmax = new Float32Array(Math.ceil(n / blocksize));
  for (let b0 = 0, blk = 0; b0 < n; b0 += blocksize, blk++) {
    const b1 = Math.min(b0 + blocksize, n);
    const m = blockAbsmax(x, b0, b1, b1 - b0 === blocksize);
    absmax[blk] = m;
    const inv = f(1 / m);
    for (let i = b0; i < b1; i++) codes[i] = code8bit(code, f(x[i]! * inv));
  }
  return { codes, absmax };
}

/** bnb dequantize_blockwise: out[i] = float32(code[q[i]] * absmax[i / blocksize]). */
export function dequantizeBlockwise8bit(
  codes: Uint8Array,
  absmax: Float32Array,
  code: Float32Array,
  blocksize: number = DEFAULT_BLOCKSIZE_8BIT,
  out: Float32Array = new Float32Array(codes.length),
): Float32Array {
  const n = codes.length;
  checkSizes("dequantizeBlockwise8bit", n, blocksize, n, n, absmax);
  if (code.length !== 256) throw new TunaError("INTERNAL", `an 8-bit code map has 256 entries, got ${code.length}`);
  for (let b0 = 0, blk = 0; b0 < n; b0 += blocksize, blk++) {
    const a = absmax[blk]!;
    const b1 = Math.min(b0 + blocksize, n);
    for (let i = b0; i < b1; i++) out[i] = code[codes[i]!]! * a;
  }
  return out;
}
