// Causal grouped-query attention over packed documents on tensor cores, backward: bf16 q/k/v/dout/dk/dv with
// head dim D = 64 or 128, mma.sync m16n8k16, FlashAttention-2 order; conventions as in attention-mma.cu.
//
// Backward (attention_backward_bf16_d{64,128}): one block per (64-key tile, kv head, split), 4 warps; a
// split takes group / splits of the group's query heads (splits from the host, attention-plan.ts). Warp w
// owns keys 16w..16w+15 and keeps their dK, dV accumulators (16 x D f32) in registers across its heads and
// all query tiles (BQ rows: 64 for D 64, 32 for D 128 to bound registers) at or after its keys.
// Per query tile: S^T = K Q^T and dP^T = V dO^T, P^T = exp2(S^T scaleLog2 - lse log2 e) (masked on the
// diagonal), dS^T = P^T (dP^T - delta); dV += P^T dO and dK += dS^T Q from registers; dS^T goes to shared and
// dQ += dS K is split over the warps and added with f32 atomics into dqAcc (N, H, D) (dS unscaled: dk is
// scaled when written, dq by attention_backward_dq). Q, dO, lse, delta double-buffered by query tile.
// With splits 1, dk and dv are written as bf16; otherwise dK (unscaled) and dV are added with f32 atomics
// into dkAcc, dvAcc (N, KV, D), converted by attention_backward_dq like dq.
// Shared: k, v (64, STR); q, dout (2, BQ, STR); dS^T (64, BQ + 8); lse, delta (2, BQ) f32:
// 65536 bytes (D 64, BQ 64), 75264 bytes (D 128, BQ 32).
// Sliding window (window > 0; 0 = none): query i sees keys j with i - window < j <= i; a key tile's query tiles
// end after the last query that sees its last key, and the mask covers both edges. Soft-capping (softcap > 0)
// recomputes the capped scores and multiplies dS by the cap's slope.
#include "attention-mma.cuh"

template <int D, int BQ>
__device__ __forceinline__ void attnBackwardMma(float* dqAcc, float* dkAcc, float* dvAcc, bf16* dk, bf16* dv,
                                                const bf16* q, const bf16* k, const bf16* v, const bf16* dout,
                                                const float* lse, const float* delta, const int* tiles, int heads,
                                                int kvHeads, int splits, float scaleLog2, float scale, int window,
                                                float softcap) {
  constexpr int BK = 64, STR = D + 8, SSTR = BQ + 8, ND = D / 8, KD = D / 16, QN = BQ / 8, QK = BQ / 16;
  // dQ (BQ x D) split over the 4 warps: QM row tiles of 16, each in QS column slices of DW.
  constexpr int QM = BQ / 16, QS = 4 / QM, DW = D / QS;
  extern __shared__ __align__(16) unsigned char smemBytes[];
  bf16* ks = reinterpret_cast<bf16*>(smemBytes);  // (BK, STR)
  bf16* vs = ks + BK * STR;                         // (BK, STR)
  bf16* qs = vs + BK * STR;                         // (2, BQ, STR)
  bf16* dos = qs + 2 * BQ * STR;                    // (2, BQ, STR)
  bf16* dsT = dos + 2 * BQ * STR;                   // (BK, SSTR): dS^T, keys x queries
  float* lseS = reinterpret_cast<float*>(dsT + BK * SSTR);  // (2, BQ) lse * log2(e), +inf past the document
  float* dltS = lseS + 2 * BQ;                                // (2, BQ)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int perTile = kvHeads * splits, tile = blockIdx.x / perTile, rest = blockIdx.x - tile * perTile;
  const int kvh = rest / splits, part = rest - kvh * splits;
  const int docStart = tiles[3 * tile], docEnd = tiles[3 * tile + 1], kStart = tiles[3 * tile + 2];
  (void)docStart;
  const int partHeads = heads / kvHeads / splits, headBase = kvh * (heads / kvHeads) + part * partHeads;
  // Queries that see a key of this tile: up to kStart + BK - 1 + window - 1 with a window.
  const int qEnd = window > 0 ? min(docEnd, kStart + BK - 1 + window) : docEnd;
  const int nQ = (qEnd - kStart + BQ - 1) / BQ, nIter = partHeads * nQ;
  const long long qRow = (long long)heads * D, kRow = (long long)kvHeads * D;
  const float inf = attnInf();

  // Starts the loads of iteration `it` (query head, query tile) into buffer `buf`.
  auto issue = [&](int it, int buf) {
    const int hh = it / nQ, h = headBase + hh, qStart = kStart + (it - hh * nQ) * BQ;
    loadRows<D, STR>(qs + buf * BQ * STR, q + (long long)h * D, qRow, qStart, BQ, docEnd);
    loadRows<D, STR>(dos + buf * BQ * STR, dout + (long long)h * D, qRow, qStart, BQ, docEnd);
    for (int r = threadIdx.x; r < BQ; r += 128) {
      const int i = qStart + r;
      lseS[buf * BQ + r] = i < docEnd ? lse[(long long)i * heads + h] * ATTN_LOG2E : inf;
      dltS[buf * BQ + r] = i < docEnd ? delta[(long long)i * heads + h] : 0.0f;
    }
  };
  loadRows<D, STR>(ks, k + (long long)kvh * D, kRow, kStart, BK, docEnd);
  loadRows<D, STR>(vs, v + (long long)kvh * D, kRow, kStart, BK, docEnd);
  issue(0, 0);
  cpAsyncCommit();

  float dkReg[ND][4], dvReg[ND][4];
#pragma unroll
  for (int n = 0; n < ND; ++n) {
    dkReg[n][0] = dkReg[n][1] = dkReg[n][2] = dkReg[n][3] = 0.0f;
    dvReg[n][0] = dvReg[n][1] = dvReg[n][2] = dvReg[n][3] = 0.0f;
  }
  const int keyRow = warp * 16, j0 = kStart + keyRow + g, j1 = j0 + 8;

  for (int it = 0; it < nIter; ++it) {
    cpAsyncWaitAll();
    __syncthreads();  // iteration it's tiles landed; everyone is done with iteration it - 1 (buffers, dS^T)
    if (it + 1 < nIter) {
      issue(it + 1, (it + 1) & 1);
      cpAsyncCommit();
    }
    const int buf = it & 1, hh = it / nQ, h = headBase + hh, qStart = kStart + (it - hh * nQ) * BQ;
    const bf16* qt = qs + buf * BQ * STR;
    const bf16* dot = dos + buf * BQ * STR;
    const float* lt = lseS + buf * BQ;
    const float* dlt = dltS + buf * BQ;

    float st[QN][4], dpt[QN][4];
#pragma unroll
    for (int n = 0; n < QN; ++n) {
      st[n][0] = st[n][1] = st[n][2] = st[n][3] = 0.0f;
      dpt[n][0] = dpt[n][1] = dpt[n][2] = dpt[n][3] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) {
      unsigned a[4], b[4];
      ldsm4(a, fragAddrA(ks, STR, keyRow, kk * 16, lane));
#pragma unroll
      for (int np = 0; np < QK; ++np) {
        ldsm4(b, fragAddrB(qt, STR, np * 16, kk * 16, lane));
        mma16816(st[2 * np], a, b[0], b[1]);
        mma16816(st[2 * np + 1], a, b[2], b[3]);
      }
      ldsm4(a, fragAddrA(vs, STR, keyRow, kk * 16, lane));
#pragma unroll
      for (int np = 0; np < QK; ++np) {
        ldsm4(b, fragAddrB(dot, STR, np * 16, kk * 16, lane));
        mma16816(dpt[2 * np], a, b[0], b[1]);
        mma16816(dpt[2 * np + 1], a, b[2], b[3]);
      }
    }

    const bool needMask = qStart < kStart + BK || (window > 0 && qStart + BQ - 1 - window >= kStart);
    unsigned pf[QK][4], df[QK][4];
#pragma unroll
    for (int n = 0; n < QN; ++n) {
      const int col = n * 8 + 2 * c, i0 = qStart + col;
      const float2 lv = *reinterpret_cast<const float2*>(lt + col);
      const float2 dl = *reinterpret_cast<const float2*>(dlt + col);
      float c00, c01, c10, c11;  // the soft-cap's slope per score (1 without a cap)
      float p00 = fastExp2(attnScoreLog2(st[n][0], scaleLog2, softcap, c00) - lv.x);
      float p01 = fastExp2(attnScoreLog2(st[n][1], scaleLog2, softcap, c01) - lv.y);
      float p10 = fastExp2(attnScoreLog2(st[n][2], scaleLog2, softcap, c10) - lv.x);
      float p11 = fastExp2(attnScoreLog2(st[n][3], scaleLog2, softcap, c11) - lv.y);
      if (needMask) {
        if (j0 > i0 || (window > 0 && j0 <= i0 - window)) p00 = 0.0f;
        if (j0 > i0 + 1 || (window > 0 && j0 <= i0 + 1 - window)) p01 = 0.0f;
        if (j1 > i0 || (window > 0 && j1 <= i0 - window)) p10 = 0.0f;
        if (j1 > i0 + 1 || (window > 0 && j1 <= i0 + 1 - window)) p11 = 0.0f;
      }
      pf[n >> 1][(n & 1) * 2] = packBf16(p00, p01);
      pf[n >> 1][(n & 1) * 2 + 1] = packBf16(p10, p11);
      df[n >> 1][(n & 1) * 2] = packBf16(p00 * (dpt[n][0] - dl.x) * c00, p01 * (dpt[n][1] - dl.y) * c01);
      df[n >> 1][(n & 1) * 2 + 1] = packBf16(p10 * (dpt[n][2] - dl.x) * c10, p11 * (dpt[n][3] - dl.y) * c11);
    }
#pragma unroll
    for (int kk = 0; kk < QK; ++kk) {
      bf16* base = dsT + (keyRow + g) * SSTR + kk * 16 + 2 * c;
      *reinterpret_cast<unsigned*>(base) = df[kk][0];
      *reinterpret_cast<unsigned*>(base + 8 * SSTR) = df[kk][1];
      *reinterpret_cast<unsigned*>(base + 8) = df[kk][2];
      *reinterpret_cast<unsigned*>(base + 8 * SSTR + 8) = df[kk][3];
    }
#pragma unroll
    for (int kk = 0; kk < QK; ++kk) {
#pragma unroll
      for (int dp = 0; dp < KD; ++dp) {
        unsigned b[4];
        ldsm4t(b, fragAddrA(dot, STR, kk * 16, dp * 16, lane));
        mma16816(dvReg[2 * dp], pf[kk], b[0], b[1]);
        mma16816(dvReg[2 * dp + 1], pf[kk], b[2], b[3]);
        ldsm4t(b, fragAddrA(qt, STR, kk * 16, dp * 16, lane));
        mma16816(dkReg[2 * dp], df[kk], b[0], b[1]);
        mma16816(dkReg[2 * dp + 1], df[kk], b[2], b[3]);
      }
    }
    __syncthreads();  // dS^T complete

    const int mt = warp / QS, dBase = (warp - mt * QS) * DW;
    unsigned af[BK / 16][4];
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) ldsm4t(af[kk], fragAddrB(dsT, SSTR, kk * 16, mt * 16, lane));
    const int i0 = qStart + mt * 16 + g, i1 = i0 + 8;
    float* dq0 = dqAcc + (long long)i0 * qRow + (long long)h * D + dBase + 2 * c;
    float* dq1 = dq0 + 8 * qRow;
#pragma unroll
    for (int dc = 0; dc < DW / 16; ++dc) {
      float acc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk) {
        unsigned b[4];
        ldsm4t(b, fragAddrA(ks, STR, kk * 16, dBase + dc * 16, lane));
        mma16816(acc[0], af[kk], b[0], b[1]);
        mma16816(acc[1], af[kk], b[2], b[3]);
      }
#pragma unroll
      for (int n2 = 0; n2 < 2; ++n2) {
        const int off = dc * 16 + n2 * 8;
        if (i0 < docEnd) atomicAddPair(dq0 + off, acc[n2][0], acc[n2][1]);
        if (i1 < docEnd) atomicAddPair(dq1 + off, acc[n2][2], acc[n2][3]);
      }
    }
  }

  if (splits > 1) {  // other blocks hold the group's other heads: add raw sums, scaled when converted
#pragma unroll
    for (int n = 0; n < ND; ++n) {
      const long long at0 = (long long)j0 * kRow + (long long)kvh * D + n * 8 + 2 * c, at1 = at0 + 8 * kRow;
      if (j0 < docEnd) {
        atomicAddPair(dkAcc + at0, dkReg[n][0], dkReg[n][1]);
        atomicAddPair(dvAcc + at0, dvReg[n][0], dvReg[n][1]);
      }
      if (j1 < docEnd) {
        atomicAddPair(dkAcc + at1, dkReg[n][2], dkReg[n][3]);
        atomicAddPair(dvAcc + at1, dvReg[n][2], dvReg[n][3]);
      }
    }
    return;
  }
  __syncthreads();  // everyone is done reading k and v: stage dk, dv in them
  bf16* stK = ks + keyRow * STR;
  bf16* stV = vs + keyRow * STR;
#pragma unroll
  for (int n = 0; n < ND; ++n) {
    const int col = n * 8 + 2 * c;
    *reinterpret_cast<unsigned*>(stK + g * STR + col) = packBf16(dkReg[n][0] * scale, dkReg[n][1] * scale);
    *reinterpret_cast<unsigned*>(stK + (g + 8) * STR + col) = packBf16(dkReg[n][2] * scale, dkReg[n][3] * scale);
    *reinterpret_cast<unsigned*>(stV + g * STR + col) = packBf16(dvReg[n][0], dvReg[n][1]);
    *reinterpret_cast<unsigned*>(stV + (g + 8) * STR + col) = packBf16(dvReg[n][2], dvReg[n][3]);
  }
  __syncwarp();
  for (int idx = lane; idx < 16 * ND; idx += 32) {
    const int r = idx / ND, col = (idx - r * ND) * 8, jr = kStart + keyRow + r;
    if (jr >= docEnd) continue;
    const long long at = jr * kRow + (long long)kvh * D + col;
    *reinterpret_cast<uint4*>(dk + at) = *reinterpret_cast<const uint4*>(stK + r * STR + col);
    *reinterpret_cast<uint4*>(dv + at) = *reinterpret_cast<const uint4*>(stV + r * STR + col);
  }
}

#define ATTN_BACKWARD(NAME, D, BQ)                                                                              \
  extern "C" __global__ void __launch_bounds__(128)                                                            \
      NAME(float* dqAcc, float* dkAcc, float* dvAcc, bf16* dk, bf16* dv, const bf16* q, const bf16* k,          \
           const bf16* v, const bf16* dout, const float* lse, const float* delta, const int* tiles, int heads,  \
           int kvHeads, int splits, float scaleLog2, float scale, int window, float softcap) {                 \
    attnBackwardMma<D, BQ>(dqAcc, dkAcc, dvAcc, dk, dv, q, k, v, dout, lse, delta, tiles, heads, kvHeads,      \
                           splits, scaleLog2, scale, window, softcap);                                         \
  }

ATTN_BACKWARD(attention_backward_bf16_d64, 64, 64)
ATTN_BACKWARD(attention_backward_bf16_d128, 128, 32)
