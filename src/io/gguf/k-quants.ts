// ggml's Q4_K, Q5_K and Q6_K super-block quantization (256 values a block), ported from ggml-quants.c
// (quantize_row_q{4,5,6}_K_ref and their helpers make_qkx2_quants / make_qx_quants, used
// by llama.cpp's quantizer when no importance matrix is given) with every float32 operation rounded as C
// rounds it (f = Math.fround), so the bytes equal llama.cpp's. Written by hand: no npm package has them.
import { f16BitsToF32, f32BitsToF16Bits, f32Bits } from "../../util/half.ts";

export const K_QUANT_TYPES = ["Q4_K", "Q5_K", "Q6_K"] as const;
export type KQuantType = (typeof K_QUANT_TYPES)[number];

const QK_K = 256;
const f = Math.fround;
const GROUP_MAX_EPS = f(1e-15);
const RDELTA = f(0.1); // 0.1f, the search step of both fits

/** ggml's nearest_int: round to nearest, ties to even, through the 1.5 * 2^23 trick. */
function nearestInt(x: number): number {
  return f(x + 12582912) - 12582912;
}

function toF16(x: number): number {
  return f32BitsToF16Bits(f32Bits(x));
}

// Scratch shared by the functions below (one quantization at a time: JavaScript is single-threaded), so the
// hot loops allocate nothing; a block's values are read at an offset instead of through subarrays.
const XM = new Float32Array(32); // x[i] - min of the block being fitted
const LAUX = new Uint8Array(32);
const WEIGHTS = new Float32Array(32);
let fitScale = 0;
let fitMin = 0;

/**
 * make_qkx2_quants(n = 32, nmax, x + xo, weights, L + lo, &the_min, Laux, rmin, rdelta, nstep, use_mad = false):
 * sets fitScale and fitMin (the_min).
 */
function makeQkx2Quants(nmax: number, x: Float32Array, xo: number, weights: Float32Array, L: Uint8Array, lo: number, rmin: number, rdelta: number, nstep: number): void {
  const n = 32;
  let min = x[xo]!;
  let max = x[xo]!;
  let sumW = weights[0]!;
  let sumX = f(sumW * x[xo]!);
  for (let i = 1; i < n; i++) {
    const xi = x[xo + i]!;
    if (xi < min) min = xi;
    if (xi > max) max = xi;
    const w = weights[i]!;
    sumW = f(sumW + w);
    sumX = f(sumX + f(w * xi));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0, lo, lo + n);
    fitScale = 0;
    fitMin = -min;
    return;
  }
  for (let i = 0; i < n; i++) XM[i] = x[xo + i]! - min; // float32 subtraction, as C's x[i] - min
  let range = f(max - min);
  let iscale = f(nmax / range);
  let scale = f(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const l = Math.max(0, Math.min(nmax, nearestInt(f(iscale * XM[i]!))));
    L[lo + i] = l;
    const diff = f(f(f(scale * l) + min) - x[xo + i]!);
    bestError = f(bestError + f(weights[i]! * f(diff * diff)));
  }
  if (nstep >= 1) {
    for (let is = 0; is <= nstep; is++) {
      iscale = f(f(f(rmin + f(rdelta * is)) + nmax) / range);
      let sumL = 0;
      let sumL2 = 0;
      let sumXl = 0;
      for (let i = 0; i < n; i++) {
        const l = Math.max(0, Math.min(nmax, nearestInt(f(iscale * XM[i]!))));
        LAUX[i] = l;
        const wl = f(weights[i]! * l);
        sumL = f(sumL + wl);
        sumL2 = f(sumL2 + f(wl * l));
        sumXl = f(sumXl + f(wl * x[xo + i]!));
      }
      const D = f(f(sumW * sumL2) - f(sumL * sumL));
      if (D > 0) {
        let thisScale = f(f(f(sumW * sumXl) - f(sumX * sumL)) / D);
        let thisMin = f(f(f(sumL2 * sumX) - f(sumL * sumXl)) / D);
        if (thisMin > 0) {
          thisMin = 0;
          thisScale = f(sumXl / sumL2);
        }
        let curError = 0;
        for (let i = 0; i < n; i++) {
          const diff = f(f(f(thisScale * LAUX[i]!) + thisMin) - x[xo + i]!);
          curError = f(curError + f(weights[i]! * f(diff * diff)));
        }
        if (curError < bestError) {
          L.set(LAUX, lo);
          bestError = curError;
          scale = thisScale;
          min = thisMin;
          // The next steps fit against the new min, as C's loop reads max - min and x[i] - min afresh.
          range = f(max - min);
          for (let i = 0; i < n; i++) XM[i] = x[xo + i]! - min;
        }
      }
    }
  }
  fitScale = scale;
  fitMin = -min;
}

const W16 = new Float32Array(16); // x[i]^2 of the 16 values being fitted
let qxSumLx = 0;
let qxSumL2 = 0;

/** The sums of make_qx_quants for one iscale (into qxSumLx, qxSumL2), storing the levels when `store`. */
function qxSums(nmax: number, x: Float32Array, xo: number, L: Int8Array, lo: number, iscale: number, store: boolean): void {
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < 16; i++) {
    const xi = x[xo + i]!;
    const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(f(iscale * xi))));
    if (store) L[lo + i] = l + nmax;
    const w = W16[i]!;
    sumlx = f(sumlx + f(f(w * xi) * l));
    suml2 = f(suml2 + f(f(w * l) * l));
  }
  qxSumLx = sumlx;
  qxSumL2 = suml2;
}

/** make_qx_quants(n = 16, nmax, x + xo, L + lo, rmse_type = 1, qw = NULL). L holds l + nmax. */
function makeQxQuants(nmax: number, x: Float32Array, xo: number, L: Int8Array, lo: number): number {
  let max = 0;
  let amax = 0;
  for (let i = 0; i < 16; i++) {
    const ax = Math.abs(x[xo + i]!);
    if (ax > amax) {
      amax = ax;
      max = x[xo + i]!;
    }
  }
  if (amax < GROUP_MAX_EPS) {
    L.fill(0, lo, lo + 16);
    return 0;
  }
  for (let i = 0; i < 16; i++) W16[i] = f(x[xo + i]! * x[xo + i]!);
  let iscale = f(-nmax / max);
  qxSums(nmax, x, xo, L, lo, iscale, true);
  let scale = qxSumL2 !== 0 ? f(qxSumLx / qxSumL2) : 0;
  let best = f(scale * qxSumLx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = f(-f(nmax + f(RDELTA * is)) / max);
    qxSums(nmax, x, xo, L, lo, iscale, false);
    if (qxSumL2 > 0 && f(qxSumLx * qxSumLx) > f(best * qxSumL2)) {
      const sumlx = qxSumLx;
      const suml2 = qxSumL2;
      qxSums(nmax, x, xo, L, lo, iscale, true);
      scale = f(sumlx / suml2);
      best = f(scale * sumlx);
    }
  }
  return scale;
}

function scaleMinK4(j: number, q: Uint8Array): [number, number] {
  if (j < 4) return [q[j]! & 63, q[j + 4]! & 63];
  return [(q[j + 4]! & 0xf) | ((q[j - 4]! >> 6) << 4), (q[j + 4]! >> 4) | ((q[j]! >> 6) << 4)];
}

const QKX_L = new Uint8Array(QK_K);
const QKX_MINS = new Float32Array(8);
const QKX_SCALES = new Float32Array(8);

/**
 * One Q4_K (nmax 15, 144 bytes) or Q5_K (nmax 31, 176 bytes) block: d and dmin as f16, 12 bytes of 6-bit
 * scales and mins, for Q5_K 32 bytes of fifth bits, then 128 bytes of the low 4 bits.
 */
function quantizeQkxBlock(nmax: 15 | 31, x: Float32Array, xOff: number, out: Uint8Array): void {
  const L = QKX_L;
  const mins = QKX_MINS;
  const scales = QKX_SCALES;
  const weights = WEIGHTS;
  let maxScale = 0;
  let maxMin = 0;
  for (let j = 0; j < 8; j++) {
    const xo = xOff + 32 * j;
    let sumX2 = 0;
    for (let l = 0; l < 32; l++) sumX2 = f(sumX2 + f(x[xo + l]! * x[xo + l]!));
    const avX = f(Math.sqrt(f(sumX2 / 32)));
    for (let l = 0; l < 32; l++) weights[l] = f(avX + Math.abs(x[xo + l]!));
    if (nmax === 15) makeQkx2Quants(15, x, xo, weights, L, 32 * j, -1, RDELTA, 20);
    else makeQkx2Quants(31, x, xo, weights, L, 32 * j, -0.5, RDELTA, 15);
    const scale = fitScale;
    const min = fitMin;
    scales[j] = scale;
    mins[j] = min;
    if (scale > maxScale) maxScale = scale;
    if (min > maxMin) maxMin = min;
  }
  const invScale = maxScale > 0 ? f(63 / maxScale) : 0;
  const invMin = maxMin > 0 ? f(63 / maxMin) : 0;
  out.fill(0);
  const sc = out.subarray(4, 16);
  for (let j = 0; j < 8; j++) {
    const ls = Math.min(63, nearestInt(f(invScale * scales[j]!)) & 0xff);
    const lm = Math.min(63, nearestInt(f(invMin * mins[j]!)) & 0xff);
    if (j < 4) {
      sc[j] = ls;
      sc[j + 4] = lm;
    } else {
      sc[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
      sc[j - 4]! |= (ls >> 4) << 6;
      sc[j]! |= (lm >> 4) << 6;
    }
  }
  const dBits = toF16(f(maxScale / 63));
  const dminBits = toF16(f(maxMin / 63));
  out[0] = dBits & 0xff;
  out[1] = dBits >> 8;
  out[2] = dminBits & 0xff;
  out[3] = dminBits >> 8;
  const d16 = f16BitsToF32(dBits);
  const dmin16 = f16BitsToF32(dminBits);
  for (let j = 0; j < 8; j++) {
    const [s, m] = scaleMinK4(j, sc);
    const d = f(d16 * s);
    if (d === 0) continue;
    const dm = f(dmin16 * m);
    for (let ii = 0; ii < 32; ii++) L[32 * j + ii] = Math.max(0, Math.min(nmax, nearestInt(f(f(x[xOff + 32 * j + ii]! + dm) / d))));
  }
  if (nmax === 15) {
    const q = out.subarray(16, 144);
    for (let j = 0, o = 0; j < QK_K; j += 64, o += 32) {
      for (let l = 0; l < 32; l++) q[o + l] = L[j + l]! | (L[j + l + 32]! << 4);
    }
    return;
  }
  const qh = out.subarray(16, 48);
  const ql = out.subarray(48, 176);
  for (let n = 0, m1 = 1, m2 = 2, o = 0; n < QK_K; n += 64, m1 <<= 2, m2 <<= 2, o += 32) {
    for (let j = 0; j < 32; j++) {
      let l1 = L[n + j]!;
      if (l1 > 15) {
        l1 -= 16;
        qh[j]! |= m1;
      }
      let l2 = L[n + j + 32]!;
      if (l2 > 15) {
        l2 -= 16;
        qh[j]! |= m2;
      }
      ql[o + j] = l1 | (l2 << 4);
    }
  }
}

/** One Q6_K block (210 bytes: 128 bytes low 4 bits, 64 bytes high 2 bits, 16 int8 scales, d as f16). */
const Q6_L = new Int8Array(QK_K);
const Q6_SCALES = new Float32Array(16);

function quantizeQ6KBlock(x: Float32Array, xOff: number, out: Uint8Array): void {
  const L = Q6_L;
  const scales = Q6_SCALES;
  let maxScale = 0;
  let maxAbsScale = 0;
  for (let ib = 0; ib < 16; ib++) {
    const scale = makeQxQuants(32, x, xOff + 16 * ib, L, 16 * ib);
    scales[ib] = scale;
    if (Math.abs(scale) > maxAbsScale) {
      maxAbsScale = Math.abs(scale);
      maxScale = scale;
    }
  }
  out.fill(0);
  if (maxAbsScale < GROUP_MAX_EPS) return; // d = +0 in f16 is two zero bytes
  const iscale = f(-128 / maxScale);
  const dBits = toF16(f(1 / iscale));
  out[208] = dBits & 0xff;
  out[209] = dBits >> 8;
  const sc = new Int8Array(out.buffer, out.byteOffset + 192, 16);
  for (let ib = 0; ib < 16; ib++) sc[ib] = Math.min(127, nearestInt(f(iscale * scales[ib]!)));
  const d16 = f16BitsToF32(dBits);
  for (let j = 0; j < 16; j++) {
    const d = f(d16 * sc[j]!);
    if (d === 0) continue;
    for (let ii = 0; ii < 16; ii++) L[16 * j + ii] = Math.max(-32, Math.min(31, nearestInt(f(x[xOff + 16 * j + ii]! / d)))) + 32;
  }
  const ql = out.subarray(0, 128);
  const qh = out.subarray(128, 192);
  for (let j = 0, lo = 0, hi = 0; j < QK_K; j += 128, lo += 64, hi += 32) {
    for (let l = 0; l < 32; l++) {
      const q1 = L[j + l]! & 0xf;
      const q2 = L[j + l + 32]! & 0xf;
      const q3 = L[j + l + 64]! & 0xf;
      const q4 = L[j + l + 96]! & 0xf;
      ql[lo + l] = q1 | (q3 << 4);
      ql[lo + l + 32] = q2 | (q4 << 4);
      qh[hi + l] = (L[j + l]! >> 4) | ((L[j + l + 32]! >> 4) << 2) | ((L[j + l + 64]! >> 4) << 4) | ((L[j + l + 96]! >> 4) << 6);
    }
  }
}

const BLOCK_BYTES: Record<KQuantType, number> = { Q4_K: 144, Q5_K: 176, Q6_K: 210 };

export function quantizeKQuant(type: KQuantType, values: Float32Array): Uint8Array {
  const blocks = values.length / QK_K;
  const size = BLOCK_BYTES[type];
  const out = new Uint8Array(blocks * size);
  for (let b = 0; b < blocks; b++) {
    const block = out.subarray(b * size, (b + 1) * size);
    if (type === "Q6_K") quantizeQ6KBlock(values, b * QK_K, block);
    else quantizeQkxBlock(type === "Q4_K" ? 15 : 31, values, b * QK_K, block);
  }
  return out;
}

export function dequantizeKQuant(type: KQuantType, bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  const size = BLOCK_BYTES[type];
  for (let b = 0; b < count / QK_K; b++) {
    const blk = bytes.subarray(b * size, (b + 1) * size);
    const y = out.subarray(b * QK_K, (b + 1) * QK_K);
    if (type === "Q4_K" || type === "Q5_K") {
      const d = f16BitsToF32(blk[0]! | (blk[1]! << 8));
      const min = f16BitsToF32(blk[2]! | (blk[3]! << 8));
      const sc = blk.subarray(4, 16);
      const five = type === "Q5_K";
      const qh = blk.subarray(16, 48);
      const q = blk.subarray(five ? 48 : 16);
      for (let j = 0, is = 0, o = 0, u1 = 1, u2 = 2; j < QK_K; j += 64, is += 2, o += 32, u1 <<= 2, u2 <<= 2) {
        const [s1, m1] = scaleMinK4(is, sc);
        const [s2, m2] = scaleMinK4(is + 1, sc);
        const d1 = f(d * s1);
        const d2 = f(d * s2);
        const mm1 = f(min * m1);
        const mm2 = f(min * m2);
        for (let l = 0; l < 32; l++) {
          const hi1 = five && (qh[l]! & u1) !== 0 ? 16 : 0;
          const hi2 = five && (qh[l]! & u2) !== 0 ? 16 : 0;
          y[j + l] = f(d1 * ((q[o + l]! & 0xf) + hi1)) - mm1;
          y[j + 32 + l] = f(d2 * ((q[o + l]! >> 4) + hi2)) - mm2;
        }
      }
    } else {
      const d = f16BitsToF32(blk[208]! | (blk[209]! << 8));
      const sc = new Int8Array(blk.buffer, blk.byteOffset + 192, 16);
      for (let n = 0, lo = 0, hi = 128, s = 0; n < QK_K; n += 128, lo += 64, hi += 32, s += 8) {
        for (let l = 0; l < 32; l++) {
          const is = Math.floor(l / 16);
          const ql0 = blk[lo + l]!;
          const ql32 = blk[lo + l + 32]!;
          const qh = blk[hi + l]!;
          const q1 = ((ql0 & 0xf) | (((qh >> 0) & 3) << 4)) - 32;
          const q2 = ((ql32 & 0xf) | (((qh >> 2) & 3) << 4)) - 32;
          const q3 = ((ql0 >> 4) | (((qh >> 4) & 3) << 4)) - 32;
          const q4 = ((ql32 >> 4) | (((qh >> 6) & 3) << 4)) - 32;
          y[n + l] = f(f(d * sc[s + is]!) * q1);
          y[n + l + 32] = f(f(d * sc[s + is + 2]!) * q2);
          y[n + l + 64] = f(f(d * sc[s + is + 4]!) * q3);
          y[n + l + 96] = f(f(d * sc[s + is + 6]!) * q4);
        }
      }
    }
  }
  return out;
}
