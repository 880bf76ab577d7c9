// Conversions between float32 and the 16- and 8-bit float formats (bf16, f16, f8 e4m3fn, f8 e5m2):
// scalar functions on bit patterns, and array loops (lookup tables, bit views) for whole tensors.

// Scratch views for reinterpreting one float32 as its bits in the scalar functions.
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** The float32 bits of `x` after rounding it to float32 (round-to-nearest-even). */
export function f32Bits(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0]!;
}

// ---- bfloat16: the top 16 bits of a float32 ----

export function bf16BitsToF32(bits: number): number {
  scratchU32[0] = (bits & 0xffff) << 16;
  return scratchF32[0]!;
}

/** bf16 bits from float32 bits: round to nearest, ties to even; NaN stays a (quiet) NaN. */
export function f32BitsToBf16Bits(u: number): number {
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x0040) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** `x` is first rounded to float32 (as when it comes from a Float32Array), then to bf16. */
export function f32ToBf16Bits(x: number): number {
  return f32BitsToBf16Bits(f32Bits(x));
}

// ---- IEEE half: 1 sign, 5 exponent (bias 15), 10 mantissa bits ----

export function f16BitsToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24; // zero and subnormals: mant * 2^-14 / 1024
  if (exp === 31) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1024 + mant) * 2 ** (exp - 25); // (1 + mant/1024) * 2^(exp-15)
}

/** f16 bits from float32 bits: round to nearest, ties to even, with subnormals, overflow to inf, NaN kept. */
export function f32BitsToF16Bits(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  if (a >= 0x7f800000) return sign | (a > 0x7f800000 ? 0x7e00 : 0x7c00);
  // 65520 (0x477ff000) is halfway between 65504, the largest half, and 65536: the tie goes to inf.
  if (a >= 0x477ff000) return sign | 0x7c00;
  if (a >= 0x38800000) {
    // Normal half: rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits.
    const r = a - 0x38000000;
    return sign | ((r + 0xfff + ((r >>> 13) & 1)) >>> 13);
  }
  // Subnormal half: the value in units of 2^-24, rounded to nearest even.
  const e = a >>> 23;
  if (e < 102) return sign; // below 2^-25: rounds to zero
  const m = (a & 0x7fffff) | 0x800000;
  const shift = 126 - e;
  let q = m >>> shift;
  const rem = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (q & 1) === 1)) q++;
  return sign | q;
}

/** `x` is first rounded to float32, then to f16. */
export function f32ToF16Bits(x: number): number {
  return f32BitsToF16Bits(f32Bits(x));
}

// ---- 8-bit floats ----

/** e4m3fn (1 sign, 4 exponent bias 7, 3 mantissa): no infinities, 0x7f and 0xff are NaN, max 448. */
export function f8E4M3BitsToF32(bits: number): number {
  const sign = bits & 0x80 ? -1 : 1;
  const exp = (bits >>> 3) & 0xf;
  const mant = bits & 0x7;
  if (exp === 0) return sign * mant * 2 ** -9; // mant/8 * 2^-6
  if (exp === 15 && mant === 7) return NaN;
  return sign * (8 + mant) * 2 ** (exp - 10); // (1 + mant/8) * 2^(exp-7)
}

/** e5m2 (1 sign, 5 exponent bias 15, 2 mantissa) is the top byte of an IEEE half. */
export function f8E5M2BitsToF32(bits: number): number {
  return f16BitsToF32((bits & 0xff) << 8);
}

// ---- arrays ----

let f16Table: Uint32Array | undefined;
let e4m3Table: Float32Array | undefined;
let e5m2Table: Float32Array | undefined;

/** float32 bits for all 65536 halves (256 KiB), built on first use: one load per element. */
function f16ToF32BitsTable(): Uint32Array {
  if (f16Table === undefined) {
    const values = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) values[i] = f16BitsToF32(i);
    f16Table = new Uint32Array(values.buffer);
  }
  return f16Table;
}

export function bf16ToF32Array(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  const out = new Uint32Array(dst.buffer, dst.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i]! << 16;
  return dst;
}

export function f32ToBf16Array(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) dst[i] = f32BitsToBf16Bits(bits[i]!);
  return dst;
}

export function f16ToF32Array(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  const table = f16ToF32BitsTable();
  const out = new Uint32Array(dst.buffer, dst.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
  return dst;
}

export function f32ToF16Array(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) dst[i] = f32BitsToF16Bits(bits[i]!);
  return dst;
}

export function f8E4M3ToF32Array(src: Uint8Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  if (e4m3Table === undefined) e4m3Table = Float32Array.from({ length: 256 }, (_, i) => f8E4M3BitsToF32(i));
  for (let i = 0; i < src.length; i++) dst[i] = e4m3Table[src[i]!]!;
  return dst;
}

export function f8E5M2ToF32Array(src: Uint8Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  if (e5m2Table === undefined) e5m2Table = Float32Array.from({ length: 256 }, (_, i) => f8E5M2BitsToF32(i));
  for (let i = 0; i < src.length; i++) dst[i] = e5m2Table[src[i]!]!;
  return dst;
}
