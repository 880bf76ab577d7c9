// Double quantization of the 4-bit absmax (bnb compress_statistics, specs/nf4_fp4.md §3): the offset
// (float32 mean), 8-bit blockwise codes of absmax - offset over the dynamic map, and the way back.
import { TunaError } from "../util/errors.ts";
import { dequantizeBlockwise8bit, quantizeBlockwise8bit } from "./blockwise.ts";
import { dynamicMap } from "./codes.ts";

const f = Math.fround;

/** bnb's state2.blocksize for the nested absmax (fixed in quantize_4bit). */
export const NESTED_BLOCKSIZE = 256;

export interface NestedAbsmax {
  /** One 8-bit code per 4-bit block: the code of absmax - offset (saved as `weight.absmax`, U8). */
  qabsmax: Uint8Array;
  /** One float32 per nestedBlocksize blocks: max |absmax - offset| (`weight.nested_absmax`). */
  nestedAbsmax: Float32Array;
  /** The 256-entry map the codes index (`weight.nested_quant_map`). */
  nestedCode: Float32Array;
  /** The float32 offset (`nested_offset` in the quant_state JSON). */
  offset: number;
  nestedBlocksize: number;
}

// Significand sums per exponent stay exact in a double up to 2^53 / 2^24 = 2^29 terms.
const EXACT_CHUNK = 2 ** 28;

/**
 * The mean of float32 values, rounded once to float32 from the exact sum (order-independent, so a
 * CUDA port can reproduce it, e.g. with integer atomics per exponent). torch's own float32 reduction
 * differs from this in the last bit for roughly a third of vectors, so bnb's nested_offset cannot
 * be reproduced bit for bit by any fixed rule. Non-finite inputs give the plain double mean.
 */
export function meanF32(values: Float32Array): number {
  const n = values.length;
  if (n === 0) return NaN;
  const bits = new Uint32Array(values.buffer, values.byteOffset, n);
  // Each float32 is m * 2^(max(e,1) - 150) for its biased exponent e: sum m per e, exactly.
  const sums = new Float64Array(256);
  let total = 0n;
  for (let c0 = 0; c0 < n; c0 += EXACT_CHUNK) {
    const c1 = Math.min(n, c0 + EXACT_CHUNK);
    for (let i = c0; i < c1; i++) {
      const u = bits[i]!;
      const e = (u >>> 23) & 0xff;
      if (e === 0xff) return plainMean(values);
      const m = e === 0 ? u & 0x7fffff : (u & 0x7fffff) | 0x800000;
      sums[e] = sums[e]! + (u >>> 31 === 1 ? -m : m);
    }
    for (let e = 0; e < 256; e++) {
      if (sums[e] !== 0) total += BigInt(sums[e]!) << BigInt(Math.max(e, 1) - 1); // in units of 2^-149
      sums[e] = 0;
    }
  }
  return roundQuotientToF32(total, n);
}

function plainMean(values: Float32Array): number {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i]!;
  return f(s / values.length);
}

/** float32(total * 2^-149 / n), correctly rounded (to nearest, ties to even). */
function roundQuotientToF32(total: bigint, n: number): number {
  if (total === 0n) return 0;
  const negative = total < 0n;
  const numerator = (negative ? -total : total) << 64n;
  const divisor = BigInt(n);
  let q = numerator / divisor;
  let sticky = numerator % divisor !== 0n;
  // Keep 40 significant bits (16 more than float32 has) and fold every lower bit into the last one,
  // so the one rounding to float32 below sees a tie only when the quotient is exactly a tie.
  const shift = q.toString(2).length - 40;
  if (shift > 0) {
    if ((q & ((1n << BigInt(shift)) - 1n)) !== 0n) sticky = true;
    q >>= BigInt(shift);
  } else if (shift < 0) {
    q <<= BigInt(-shift);
  }
  if (sticky) q |= 1n;
  const value = Number(q) * 2 ** (shift - 149 - 64);
  return f(negative ? -value : value);
}

/** bnb quantize_4bit's compress_statistics step on a float32 absmax vector. */
export function doubleQuantizeAbsmax(absmax: Float32Array, code: Float32Array = dynamicMap()): NestedAbsmax {
  const offset = meanF32(absmax);
  const centered = new Float32Array(absmax.length);
  for (let i = 0; i < absmax.length; i++) centered[i] = absmax[i]! - offset; // the store rounds to float32
  const { codes, absmax: nested } = quantizeBlockwise8bit(centered, code, NESTED_BLOCKSIZE);
  // A copy per tensor, as bnb clones it for saving: callers may keep or modify it.
  return { qabsmax: codes, nestedAbsmax: nested, nestedCode: code.slice(), offset, nestedBlocksize: NESTED_BLOCKSIZE };
}

/** absmax[k] = float32(float32(nestedCode[q[k]] * nestedAbsmax[k / 256]) + offset): two kernels, two roundings. */
export function dequantizeNestedAbsmax(nested: NestedAbsmax, out: Float32Array = new Float32Array(nested.qabsmax.length)): Float32Array {
  if (out.length !== nested.qabsmax.length) {
    throw new TunaError("INTERNAL", `dequantizeNestedAbsmax: output holds ${out.length} values, expected ${nested.qabsmax.length}`);
  }
  dequantizeBlockwise8bit(nested.qabsmax, nested.nestedAbsmax, nested.nestedCode, nested.nestedBlocksize, out);
  const offset = nested.offset;
  for (let i = 0; i < out.length; i++) out[i] = out[i]! + offset;
  return out;
}
