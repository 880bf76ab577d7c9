// The matmul kernel on float32 arrays: cache blocks packed into 4-wide panels, a 4x4 register micro-kernel,
// float64 accumulation. Self-contained on purpose: pool.ts ships these functions' source to worker threads.

/** One rectangle of a matmul: a plain object, so it can be posted to a worker thread as it is. */
export interface GemmPart {
  /** (M, N) float32, written in rows [i0, i1) x columns [j0, j1). */
  c: Float32Array;
  /** Stored (M, K), or (K, M) when transA. */
  a: Float32Array;
  /** Stored (K, N), or (N, K) when transB. */
  b: Float32Array;
  M: number;
  N: number;
  K: number;
  transA: boolean;
  transB: boolean;
  /** Already rounded to float32. */
  alpha: number;
  accumulate: boolean;
  i0: number;
  i1: number;
  j0: number;
  j1: number;
}

/**
 * c[i0:i1, j0:j1] = alpha * op(a) @ op(b) [+ c]. Every product and sum is a float64 operation, and each
 * output element is rounded to float32 once, when it is stored.
 */
export function gemmTile(part: GemmPart): void {
  const { c, a, b, M, N, K, transA, transB, alpha, accumulate, i0, i1, j0, j1 } = part;
  if (i1 <= i0 || j1 <= j0) return;
  // Out-of-range indices of a typed array read undefined and drop writes silently: refuse instead.
  if (c.length < (i1 - 1) * N + j1 || a.length < M * K || b.length < K * N) {
    throw new RangeError(`gemm part rows ${i0}..${i1} x columns ${j0}..${j1} of (${M}, ${N}, K ${K}) does not fit c ${c.length}, a ${a.length}, b ${b.length} elements`);
  }
  // Block sizes (elements; locals so the source ships alone): an A block (MC x KC) and a B block (NC x KC)
  // of float32 stay in L2 while the micro-kernel sweeps them.
  const MC = 64;
  const NC = 128;
  const KC = 256;
  const mcMax = Math.min(MC, (i1 - i0 + 3) & ~3);
  const ncMax = Math.min(NC, (j1 - j0 + 3) & ~3);
  const kcMax = Math.max(1, Math.min(KC, K));
  const ap = new Float32Array(mcMax * kcMax);
  const bp = new Float32Array(ncMax * kcMax);
  const acc = new Float64Array(mcMax * ncMax);
  for (let jb = j0; jb < j1; jb += NC) {
    const nc = Math.min(NC, j1 - jb);
    const ncp = (nc + 3) & ~3;
    for (let ib = i0; ib < i1; ib += MC) {
      const mc = Math.min(MC, i1 - ib);
      const mcp = (mc + 3) & ~3;
      acc.fill(0, 0, mcp * ncp);
      for (let kb = 0; kb < K; kb += KC) {
        const kc = Math.min(KC, K - kb);
        gemmPack(ap, a, transA ? 1 : K, transA ? M : 1, ib, mc, kb, kc);
        gemmPack(bp, b, transB ? K : 1, transB ? 1 : N, jb, nc, kb, kc);
        gemmMicro(acc, ap, bp, mcp, ncp, kc);
      }
      for (let i = 0; i < mc; i++) {
        const row = (ib + i) * N + jb;
        const accRow = i * ncp;
        if (accumulate) for (let j = 0; j < nc; j++) c[row + j] = alpha * acc[accRow + j]! + c[row + j]!;
        else for (let j = 0; j < nc; j++) c[row + j] = alpha * acc[accRow + j]!;
      }
    }
  }
}

/**
 * Packs lines [r0, r0+count) x depth [k0, k0+kc) of a matrix whose element (line, k) sits at
 * line*lineStride + k*kStride into panels of 4 lines: dst[(r/4)*4*kc + k*4 + r%4], zero-padded.
 */
export function gemmPack(
  dst: Float32Array,
  src: Float32Array,
  lineStride: number,
  kStride: number,
  r0: number,
  count: number,
  k0: number,
  kc: number,
): void {
  const padded = (count + 3) & ~3;
  if (kStride === 1) {
    for (let r = 0; r < count; r++) {
      const base = (r >> 2) * 4 * kc + (r & 3);
      const s = (r0 + r) * lineStride + k0;
      for (let k = 0; k < kc; k++) dst[base + k * 4] = src[s + k]!;
    }
  } else {
    // Lines are adjacent in memory (lineStride 1): walk them in the inner loop to read contiguously.
    for (let k = 0; k < kc; k++) {
      const s = (k0 + k) * kStride + r0 * lineStride;
      for (let r = 0; r < count; r++) dst[(r >> 2) * 4 * kc + k * 4 + (r & 3)] = src[s + r * lineStride]!;
    }
  }
  for (let r = count; r < padded; r++) {
    const base = (r >> 2) * 4 * kc + (r & 3);
    for (let k = 0; k < kc; k++) dst[base + k * 4] = 0;
  }
}

/**
 * acc (mcp, ncp) += packed a (mcp, kc) @ packed b (ncp, kc)^T, 4x4 outputs at a time in locals: 16
 * accumulators plus the loads are about what x64's 16 vector registers hold.
 */
export function gemmMicro(acc: Float64Array, ap: Float32Array, bp: Float32Array, mcp: number, ncp: number, kc: number): void {
  for (let jr = 0; jr < ncp; jr += 4) {
    const pbStart = jr * kc;
    for (let ir = 0; ir < mcp; ir += 4) {
      let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
      let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
      let pa = ir * kc;
      let pb = pbStart;
      for (let k = 0; k < kc; k++, pa += 4, pb += 4) {
        const x0 = ap[pa]!, x1 = ap[pa + 1]!, x2 = ap[pa + 2]!, x3 = ap[pa + 3]!;
        let y = bp[pb]!;
        c00 += x0 * y; c10 += x1 * y; c20 += x2 * y; c30 += x3 * y;
        y = bp[pb + 1]!;
        c01 += x0 * y; c11 += x1 * y; c21 += x2 * y; c31 += x3 * y;
        y = bp[pb + 2]!;
        c02 += x0 * y; c12 += x1 * y; c22 += x2 * y; c32 += x3 * y;
        y = bp[pb + 3]!;
        c03 += x0 * y; c13 += x1 * y; c23 += x2 * y; c33 += x3 * y;
      }
      let o = ir * ncp + jr;
      acc[o] = acc[o]! + c00; acc[o + 1] = acc[o + 1]! + c01; acc[o + 2] = acc[o + 2]! + c02; acc[o + 3] = acc[o + 3]! + c03;
      o += ncp;
      acc[o] = acc[o]! + c10; acc[o + 1] = acc[o + 1]! + c11; acc[o + 2] = acc[o + 2]! + c12; acc[o + 3] = acc[o + 3]! + c13;
      o += ncp;
      acc[o] = acc[o]! + c20; acc[o + 1] = acc[o + 1]! + c21; acc[o + 2] = acc[o + 2]! + c22; acc[o + 3] = acc[o + 3]! + c23;
      o += ncp;
      acc[o] = acc[o]! + c30; acc[o + 1] = acc[o + 1]! + c31; acc[o + 2] = acc[o + 2]! + c32; acc[o + 3] = acc[o + 3]! + c33;
    }
  }
}
