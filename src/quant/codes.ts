// The code tables of bitsandbytes (NF4, FP4, the 8-bit dynamic map) and the per-value code choice of
// its CUDA kernels, in float32 arithmetic (specs/nf4_fp4.md §1, §2.4, §3.1, §3.2).
import { TunaError } from "../util/errors.ts";

const f = Math.fround;

export type QuantType4bit = "nf4" | "fp4";

/** NF4 levels, index = 4-bit code (get_4bit_type("nf4"), nf4_dequantization_lut). Sorted ascending. */
export const NF4_CODE: Float32Array = Float32Array.from([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]);

// FP4 raw levels by bit pattern (sign bit 0b1000), normalized by their absmax 12 in float32.
const FP4_RAW = [0, 0.0625, 8, 12, 4, 6, 2, 3];

/**
 * FP4 levels as the CUDA dequantizer produces them: `lut[v & 7] * (v & 8 ? -1 : 1)`, so code 8 is -0.0.
 * Dequantization uses this table.
 */
export const FP4_CODE: Float32Array = Float32Array.from({ length: 16 }, (_, v) => (v & 8 ? -1 : 1) * f(FP4_RAW[v & 7]! / 12));

/**
 * The `quant_map` tensor bnb saves for FP4: get_4bit_type builds it from a Python list whose `-0` is
 * the integer 0, so entry 8 is +0.0 (unlike FP4_CODE). Only the serialized bytes differ.
 */
export const FP4_QUANT_MAP: Float32Array = Float32Array.from(FP4_CODE, (v) => (v === 0 ? 0 : v));

/** The 16-entry table dequantization uses for a 4-bit type. */
export function code4bit(quantType: QuantType4bit): Float32Array {
  return quantType === "nf4" ? NF4_CODE : FP4_CODE;
}

/** The `weight.quant_map` tensor values bnb writes for a 4-bit type. */
export function quantMap4bit(quantType: QuantType4bit): Float32Array {
  return quantType === "nf4" ? NF4_CODE : FP4_QUANT_MAP;
}

// dQuantizeNF4's float literals (`f` suffix: float32), named by their place in the tree.
const NF4_T = f(0.03979014977812767);
const NF4_T1 = f(0.3893125355243683);
const NF4_T11 = f(0.6427869200706482);
const NF4_T111 = f(0.8614784181118011);
const NF4_T110 = f(0.5016634166240692);
const NF4_T10 = f(0.2035212516784668);
const NF4_T101 = f(0.2920137718319893);
const NF4_T100 = f(0.1202552504837513);
const NF4_T0 = f(-0.33967943489551544);
const NF4_T01 = f(-0.13791173323988914);
const NF4_T011 = f(-0.045525018125772476);
const NF4_T010 = f(-0.23460740596055984);
const NF4_T00 = f(-0.6106329262256622);
const NF4_T001 = f(-0.4599952697753906);
const NF4_T000 = f(-0.8480964004993439);

/**
 * The NF4 tree's thresholds in ascending order: with strict `>` tests, the code of x is how many of
 * them x exceeds (NaN exceeds none: code 0). Kernels count instead of walking the tree.
 */
export const NF4_THRESHOLDS: Float32Array = Float32Array.from([
  NF4_T000, NF4_T00, NF4_T001, NF4_T0, NF4_T010, NF4_T01, NF4_T011, NF4_T, NF4_T100, NF4_T10, NF4_T101, NF4_T1, NF4_T110, NF4_T11, NF4_T111,
]);

/**
 * dQuantizeNF4: the NF4 code of a scaled float32 value. Strict `>` tests, so a value exactly on a
 * threshold takes the lower code, and NaN (fails every test) gives code 0.
 */
export function nf4Code(x: number): number {
  if (x > NF4_T) {
    if (x > NF4_T1) {
      if (x > NF4_T11) return x > NF4_T111 ? 15 : 14;
      return x > NF4_T110 ? 13 : 12;
    }
    if (x > NF4_T10) return x > NF4_T101 ? 11 : 10;
    return x > NF4_T100 ? 9 : 8;
  }
  if (x > NF4_T0) {
    if (x > NF4_T01) return x > NF4_T011 ? 7 : 6;
    return x > NF4_T010 ? 5 : 4;
  }
  if (x > NF4_T00) return x > NF4_T001 ? 3 : 2;
  return x > NF4_T000 ? 1 : 0;
}

// dQuantizeFP4's literals; they are bnb's own roundings of the midpoints (0.583333 is not 7/12).
const FP4_T = f(0.29166667);
const FP4_T1 = f(0.583333);
const FP4_T11 = f(0.8333333);
const FP4_T10 = f(0.4166667);
const FP4_T0 = f(0.0859375);
const FP4_T01 = f(0.20833333);
const FP4_T00 = f(0.00260417);

/** The FP4 tree's thresholds on |x| in ascending order, and the 3-bit code of each interval between them. */
export const FP4_THRESHOLDS: Float32Array = Float32Array.from([FP4_T00, FP4_T0, FP4_T01, FP4_T, FP4_T10, FP4_T1, FP4_T11]);
export const FP4_INTERVAL_CODES: readonly number[] = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011];

/** dQuantizeFP4: sign from `x < 0` (so -0.0 and NaN are positive), then a tree on |x| with strict `>`. */
export function fp4Code(x: number): number {
  const sign = x < 0 ? 8 : 0;
  const a = Math.abs(x);
  if (a > FP4_T) {
    if (a > FP4_T1) return (a > FP4_T11 ? 0b011 : 0b010) + sign;
    return (a > FP4_T10 ? 0b101 : 0b100) + sign;
  }
  if (a > FP4_T0) return (a > FP4_T01 ? 0b111 : 0b110) + sign;
  return (a > FP4_T00 ? 0b001 : 0b000) + sign;
}

/**
 * dQuantize<0>: the 8-bit code of x over a sorted 256-entry map, by the kernel's binary search from
 * pivot 127 and its tie rules (above the final pivot: strictly above the midpoint goes up; at or
 * below it: strictly below the midpoint goes down). NaN gives 0.
 */
export function code8bit(code: Float32Array, x: number): number {
  let pivot = 127;
  let upperPivot = 255;
  let lowerPivot = 0;
  let lower = -1;
  let upper = 1;
  let val = code[pivot]!;
  for (let i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lowerPivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upperPivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot]!;
  }
  if (upperPivot === 255) upper = code[255]!;
  if (lowerPivot === 0) lower = code[0]!;
  if (x > val) return x > f(f(upper + val) * 0.5) ? upperPivot : pivot;
  return x < f(f(lower + val) * 0.5) ? lowerPivot : pivot;
}

// ---- create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) ----

const f64 = new Float64Array(1);
const f64Words = new Uint32Array(f64.buffer);

/** a*b + c rounded once to float32 (a, b, c float32), as a hardware fused multiply-add gives it. */
function fmaF32(a: number, b: number, c: number): number {
  const p = a * b; // exact: two 24-bit significands fit in 53 bits
  const s = p + c;
  const bb = s - p;
  const err = p - (s - bb) + (c - bb); // p + c == s + err exactly (TwoSum)
  if (err === 0) return f(s);
  // Round to odd in double, then to float32: 53 >= 24 + 2 bits makes the second rounding correct.
  f64[0] = s;
  if ((f64Words[0]! & 1) === 0) {
    const awayFromZero = err > 0 === s > 0;
    const lo = f64Words[0]!;
    if (awayFromZero) {
      f64Words[0] = (lo + 1) >>> 0;
      if (lo === 0xffffffff) f64Words[1] = f64Words[1]! + 1;
    } else {
      f64Words[0] = (lo - 1) >>> 0;
      if (lo === 0) f64Words[1] = f64Words[1]! - 1;
    }
  }
  return f(f64[0]);
}

/**
 * torch.linspace(start, end, steps, dtype=float32) on the CPU: step = (end-start)/(steps-1); the first
 * half counts up from start, the second half down from end. With `fma`, `start + step*i` is rounded
 * once, as torch's AVX2/AVX512 kernels compute it; without, twice (its DEFAULT kernel).
 */
function linspaceF32(start: number, end: number, steps: number, fma: boolean): Float32Array {
  const s = f(start);
  const e = f(end);
  const step = f(f(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  const out = new Float32Array(steps);
  for (let i = 0; i < steps; i++) {
    if (i < half) out[i] = fma ? fmaF32(step, i, s) : f(s + f(step * i));
    else out[i] = fma ? fmaF32(-step, steps - i - 1, e) : f(e - f(step * (steps - i - 1)));
  }
  return out;
}

// Python's 10 ** (i - 6) for i = 0..6, as literals (JS's ** need not round like C's pow).
const POWERS_OF_TEN = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1];

export interface DynamicMapOptions {
  /**
   * Whether torch's linspace used a fused multiply-add. true (default) reproduces torch on x86-64
   * with AVX2/AVX512 (where bnb runs; checked bit for bit against torch 2.11); false reproduces
   * torch's DEFAULT CPU kernel and the table printed in specs/nf4_fp4.md §3.2. They differ in 42 entries.
   */
  fma?: boolean;
}

/**
 * bnb's create_dynamic_map() (signed, 8 bits, 7 exponent bits) in float32: for i = 0..6 the means
 * of linspace(0.1, 1, 2^i + 1) scaled by float32(10^(i-6)), with their negatives, plus 0 and 1,
 * sorted. 256 entries, [127] = 0, [255] = 1, no -1.
 */
export function createDynamicMap(options: DynamicMapOptions = {}): Float32Array {
  const fma = options.fma ?? true;
  const values: number[] = [];
  for (let i = 0; i < 7; i++) {
    const b = linspaceF32(0.1, 1, 2 ** i + 1, fma);
    // torch multiplies a float32 tensor by a Python float as float32(scalar) * x.
    const scale = f(POWERS_OF_TEN[i]!);
    const means: number[] = [];
    for (let k = 0; k + 1 < b.length; k++) means.push(f(f(b[k]! + b[k + 1]!) / 2));
    for (const m of means) values.push(f(scale * m));
    for (const m of means) values.push(-f(scale * m));
  }
  values.push(0, 1);
  if (values.length !== 256) throw new TunaError("INTERNAL", `create_dynamic_map built ${values.length} values, not 256`);
  return Float32Array.from(values.sort((a, b) => a - b));
}

let defaultDynamicMap: Float32Array | undefined;

/** The map bnb's quantize_blockwise uses by default (fma variant), built once. Do not modify it. */
export function dynamicMap(): Float32Array {
  defaultDynamicMap ??= createDynamicMap();
  return defaultDynamicMap;
}
