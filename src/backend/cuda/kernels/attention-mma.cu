// Causal grouped-query attention over packed documents on tensor cores: bf16 q/k/v/out/dout/dq/dk/dv with head
// dim D = 64 or 128, mma.sync m16n8k16 (bf16 in, f32 accumulate), FlashAttention-2 structure.
//
// Tile tables and conventions as in attention.cu: int32 (docStart, docEnd, rowStart) triples, tiles aligned to
// docStart, exp2 of scores scaled by scaleLog2 = scale * log2(e), lse in natural log. 128 threads (4 warps).
// Shared tiles are bf16 rows of STR = D + 8 elements: the 16-byte pad puts the 8 rows an ldmatrix reads in
// 8 different bank groups, and rows stay 16-byte aligned for cp.async. Rows past the document are zero-filled.
//
// Forward (attention_forward_bf16_d{64,128}): one block per (64-query tile, head); warp w owns query rows
// 16w..16w+15, its Q fragments stay in registers, S = Q K^T and O += P V run from registers (P is S's
// accumulator rounded to bf16, the FA2 register reuse), online softmax in f32 with quad shuffles.
// Keys in tiles of 64, double-buffered: tile t+1 is fetched by cp.async while tile t is computed. Only the
// diagonal tile is masked; tiles past it are skipped. Shared: q (64, STR) + k, v (2, 64, STR) =
// 320 * STR * 2 bytes: 46080 (D 64), 87040 (D 128). q's rows are reused to stage the output for 16-byte stores.
//
// Backward (attention_backward_bf16_d{64,128}): one block per (64-key tile, kv head); warp w owns keys
// 16w..16w+15 and keeps their dK, dV accumulators (16 x D f32) in registers across all query heads of the
// group and all query tiles (BQ rows: 64 for D 64, 32 for D 128 to bound registers) at or after its keys.
// Per query tile: S^T = K Q^T and dP^T = V dO^T, P^T = exp2(S^T scaleLog2 - lse log2 e) (masked on the
// diagonal), dS^T = P^T (dP^T - delta); dV += P^T dO and dK += dS^T Q from registers; dS^T goes to shared and
// dQ += dS K is split over the warps and added with f32 atomics into dqAcc (N, H, D) (dS unscaled: dk is
// scaled when written, dq by attention_backward_dq). Q, dO, lse, delta double-buffered by query tile.
// Shared: k, v (64, STR); q, dout (2, BQ, STR); dS^T (64, BQ + 8); lse, delta (2, BQ) f32:
// 65536 bytes (D 64, BQ 64), 75264 bytes (D 128, BQ 32).
#include "attention-mma.cuh"

#define ATTN_LN2 0.69314718055994530942f
#define ATTN_LOG2E 1.44269504088896340736f

__device__ __forceinline__ float attnInf() { return __int_as_float(0x7f800000); }

__device__ __forceinline__ float quadMax(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quadSum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

__device__ __forceinline__ void atomicAddPair(float* p, float a, float b) {
#if __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(p), make_float2(a, b));
#else
  atomicAdd(p, a);
  atomicAdd(p + 1, b);
#endif
}

template <int D>
__device__ __forceinline__ void attnForwardMma(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                                               const int* tiles, int heads, int kvHeads, float scaleLog2) {
  constexpr int BQ = 64, BK = 64, STR = D + 8, ND = D / 8, KD = D / 16, NS = BK / 8;
  extern __shared__ __align__(16) unsigned char smemBytes[];
  bf16* qs = reinterpret_cast<bf16*>(smemBytes);  // (BQ, STR)
  bf16* ks = qs + BQ * STR;                         // (2, BK, STR)
  bf16* vs = ks + 2 * BK * STR;                     // (2, BK, STR)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int tile = blockIdx.x / heads, h = blockIdx.x - tile * heads;
  const int docStart = tiles[3 * tile], docEnd = tiles[3 * tile + 1], qStart = tiles[3 * tile + 2];
  const int kvh = h / (heads / kvHeads);
  const long long qRow = (long long)heads * D, kRow = (long long)kvHeads * D;
  const bf16* kSrc = k + (long long)kvh * D;
  const bf16* vSrc = v + (long long)kvh * D;
  const int nTiles = (qStart - docStart) / BK + 1;  // the last one is the diagonal
  const float inf = attnInf();

  loadRows<D, STR>(qs, q + (long long)h * D, qRow, qStart, BQ, docEnd);
  loadRows<D, STR>(ks, kSrc, kRow, docStart, BK, docEnd);
  loadRows<D, STR>(vs, vSrc, kRow, docStart, BK, docEnd);
  cpAsyncCommit();

  unsigned qf[KD][4];
  float o[ND][4];
#pragma unroll
  for (int n = 0; n < ND; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m0 = -inf, m1 = -inf, l0 = 0.0f, l1 = 0.0f;  // rows g and g + 8 of the warp; l per lane
  const int row0 = qStart + warp * 16 + g, row1 = row0 + 8;

  for (int t = 0; t < nTiles; ++t) {
    cpAsyncWaitAll();
    __syncthreads();  // tile t landed for everyone; everyone is done with tile t - 1's buffer
    if (t == 0) {
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) ldsm4(qf[kk], fragAddrA(qs, STR, warp * 16, kk * 16, lane));
    }
    if (t + 1 < nTiles) {
      const int nb = (t + 1) & 1, next = docStart + (t + 1) * BK;
      loadRows<D, STR>(ks + nb * BK * STR, kSrc, kRow, next, BK, docEnd);
      loadRows<D, STR>(vs + nb * BK * STR, vSrc, kRow, next, BK, docEnd);
      cpAsyncCommit();
    }
    const bf16* kt = ks + (t & 1) * BK * STR;
    const bf16* vt = vs + (t & 1) * BK * STR;

    float s[NS][4];
#pragma unroll
    for (int n = 0; n < NS; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) {
#pragma unroll
      for (int np = 0; np < BK / 16; ++np) {
        unsigned b[4];
        ldsm4(b, fragAddrB(kt, STR, np * 16, kk * 16, lane));
        mma16816(s[2 * np], qf[kk], b[0], b[1]);
        mma16816(s[2 * np + 1], qf[kk], b[2], b[3]);
      }
    }

    const int kStart = docStart + t * BK;
    const bool diagonal = t == nTiles - 1;
    float mx0 = -inf, mx1 = -inf;
#pragma unroll
    for (int n = 0; n < NS; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[n][e] * scaleLog2;
        if (diagonal && kStart + n * 8 + 2 * c + (e & 1) > (e < 2 ? row0 : row1)) x = -inf;
        s[n][e] = x;
      }
      mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
      mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
    }
    const float mn0 = fmaxf(m0, quadMax(mx0)), mn1 = fmaxf(m1, quadMax(mx1));
    const float mu0 = mn0 == -inf ? 0.0f : mn0, mu1 = mn1 == -inf ? 0.0f : mn1;
    const float corr0 = exp2f(m0 - mu0), corr1 = exp2f(m1 - mu1);
    m0 = mn0;
    m1 = mn1;
    l0 *= corr0;
    l1 *= corr1;
#pragma unroll
    for (int n = 0; n < ND; ++n) {
      o[n][0] *= corr0;
      o[n][1] *= corr0;
      o[n][2] *= corr1;
      o[n][3] *= corr1;
    }
    unsigned pf[BK / 16][4];
#pragma unroll
    for (int n = 0; n < NS; ++n) {
      const float p0 = exp2f(s[n][0] - mu0), p1 = exp2f(s[n][1] - mu0);
      const float p2 = exp2f(s[n][2] - mu1), p3 = exp2f(s[n][3] - mu1);
      l0 += p0 + p1;
      l1 += p2 + p3;
      pf[n >> 1][(n & 1) * 2] = packBf16(p0, p1);
      pf[n >> 1][(n & 1) * 2 + 1] = packBf16(p2, p3);
    }
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
#pragma unroll
      for (int dp = 0; dp < KD; ++dp) {
        unsigned b[4];
        ldsm4t(b, fragAddrA(vt, STR, kk * 16, dp * 16, lane));
        mma16816(o[2 * dp], pf[kk], b[0], b[1]);
        mma16816(o[2 * dp + 1], pf[kk], b[2], b[3]);
      }
    }
  }

  l0 = quadSum(l0);
  l1 = quadSum(l1);
  const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
  bf16* stage = qs + warp * 16 * STR;  // this warp's own q rows, read only by it (at t = 0)
#pragma unroll
  for (int n = 0; n < ND; ++n) {
    *reinterpret_cast<unsigned*>(stage + g * STR + n * 8 + 2 * c) = packBf16(o[n][0] * inv0, o[n][1] * inv0);
    *reinterpret_cast<unsigned*>(stage + (g + 8) * STR + n * 8 + 2 * c) = packBf16(o[n][2] * inv1, o[n][3] * inv1);
  }
  __syncwarp();
  for (int idx = lane; idx < 16 * ND; idx += 32) {
    const int r = idx / ND, col = (idx - r * ND) * 8, i = qStart + warp * 16 + r;
    if (i < docEnd)
      *reinterpret_cast<uint4*>(out + i * qRow + (long long)h * D + col) =
          *reinterpret_cast<const uint4*>(stage + r * STR + col);
  }
  if (c == 0) {
    if (row0 < docEnd) lse[(long long)row0 * heads + h] = (m0 + log2f(l0)) * ATTN_LN2;
    if (row1 < docEnd) lse[(long long)row1 * heads + h] = (m1 + log2f(l1)) * ATTN_LN2;
  }
}

template <int D, int BQ>
__device__ __forceinline__ void attnBackwardMma(float* dqAcc, bf16* dk, bf16* dv, const bf16* q, const bf16* k,
                                                const bf16* v, const bf16* dout, const float* lse,
                                                const float* delta, const int* tiles, int heads, int kvHeads,
                                                float scaleLog2, float scale) {
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
  const int tile = blockIdx.x / kvHeads, kvh = blockIdx.x - tile * kvHeads;
  const int docStart = tiles[3 * tile], docEnd = tiles[3 * tile + 1], kStart = tiles[3 * tile + 2];
  (void)docStart;
  const int group = heads / kvHeads;
  const int nQ = (docEnd - kStart + BQ - 1) / BQ, nIter = group * nQ;
  const long long qRow = (long long)heads * D, kRow = (long long)kvHeads * D;
  const float inf = attnInf();

  // Starts the loads of iteration `it` (query head, query tile) into buffer `buf`.
  auto issue = [&](int it, int buf) {
    const int hh = it / nQ, h = kvh * group + hh, qStart = kStart + (it - hh * nQ) * BQ;
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

  float dkAcc[ND][4], dvAcc[ND][4];
#pragma unroll
  for (int n = 0; n < ND; ++n) {
    dkAcc[n][0] = dkAcc[n][1] = dkAcc[n][2] = dkAcc[n][3] = 0.0f;
    dvAcc[n][0] = dvAcc[n][1] = dvAcc[n][2] = dvAcc[n][3] = 0.0f;
  }
  const int keyRow = warp * 16, j0 = kStart + keyRow + g, j1 = j0 + 8;

  for (int it = 0; it < nIter; ++it) {
    cpAsyncWaitAll();
    __syncthreads();  // iteration it's tiles landed; everyone is done with iteration it - 1 (buffers, dS^T)
    if (it + 1 < nIter) {
      issue(it + 1, (it + 1) & 1);
      cpAsyncCommit();
    }
    const int buf = it & 1, hh = it / nQ, h = kvh * group + hh, qStart = kStart + (it - hh * nQ) * BQ;
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

    const bool needMask = qStart < kStart + BK;
    unsigned pf[QK][4], df[QK][4];
#pragma unroll
    for (int n = 0; n < QN; ++n) {
      const int col = n * 8 + 2 * c, i0 = qStart + col;
      const float2 lv = *reinterpret_cast<const float2*>(lt + col);
      const float2 dl = *reinterpret_cast<const float2*>(dlt + col);
      float p00 = exp2f(st[n][0] * scaleLog2 - lv.x), p01 = exp2f(st[n][1] * scaleLog2 - lv.y);
      float p10 = exp2f(st[n][2] * scaleLog2 - lv.x), p11 = exp2f(st[n][3] * scaleLog2 - lv.y);
      if (needMask) {
        if (j0 > i0) p00 = 0.0f;
        if (j0 > i0 + 1) p01 = 0.0f;
        if (j1 > i0) p10 = 0.0f;
        if (j1 > i0 + 1) p11 = 0.0f;
      }
      pf[n >> 1][(n & 1) * 2] = packBf16(p00, p01);
      pf[n >> 1][(n & 1) * 2 + 1] = packBf16(p10, p11);
      df[n >> 1][(n & 1) * 2] = packBf16(p00 * (dpt[n][0] - dl.x), p01 * (dpt[n][1] - dl.y));
      df[n >> 1][(n & 1) * 2 + 1] = packBf16(p10 * (dpt[n][2] - dl.x), p11 * (dpt[n][3] - dl.y));
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
        mma16816(dvAcc[2 * dp], pf[kk], b[0], b[1]);
        mma16816(dvAcc[2 * dp + 1], pf[kk], b[2], b[3]);
        ldsm4t(b, fragAddrA(qt, STR, kk * 16, dp * 16, lane));
        mma16816(dkAcc[2 * dp], df[kk], b[0], b[1]);
        mma16816(dkAcc[2 * dp + 1], df[kk], b[2], b[3]);
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

  __syncthreads();  // everyone is done reading k and v: stage dk, dv in them
  bf16* stK = ks + keyRow * STR;
  bf16* stV = vs + keyRow * STR;
#pragma unroll
  for (int n = 0; n < ND; ++n) {
    const int col = n * 8 + 2 * c;
    *reinterpret_cast<unsigned*>(stK + g * STR + col) = packBf16(dkAcc[n][0] * scale, dkAcc[n][1] * scale);
    *reinterpret_cast<unsigned*>(stK + (g + 8) * STR + col) = packBf16(dkAcc[n][2] * scale, dkAcc[n][3] * scale);
    *reinterpret_cast<unsigned*>(stV + g * STR + col) = packBf16(dvAcc[n][0], dvAcc[n][1]);
    *reinterpret_cast<unsigned*>(stV + (g + 8) * STR + col) = packBf16(dvAcc[n][2], dvAcc[n][3]);
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

#define ATTN_FORWARD(NAME, D)                                                                                  \
  extern "C" __global__ void __launch_bounds__(128) NAME(bf16* out, float* lse, const bf16* q, const bf16* k, \
                                                         const bf16* v, const int* tiles, int heads,          \
                                                         int kvHeads, float scaleLog2) {                      \
    attnForwardMma<D>(out, lse, q, k, v, tiles, heads, kvHeads, scaleLog2);                                    \
  }
#define ATTN_BACKWARD(NAME, D, BQ)                                                                              \
  extern "C" __global__ void __launch_bounds__(128)                                                            \
      NAME(float* dqAcc, bf16* dk, bf16* dv, const bf16* q, const bf16* k, const bf16* v, const bf16* dout,     \
           const float* lse, const float* delta, const int* tiles, int heads, int kvHeads, float scaleLog2,     \
           float scale) {                                                                                      \
    attnBackwardMma<D, BQ>(dqAcc, dk, dv, q, k, v, dout, lse, delta, tiles, heads, kvHeads, scaleLog2, scale); \
  }

ATTN_FORWARD(attention_forward_bf16_d64, 64)
ATTN_FORWARD(attention_forward_bf16_d128, 128)
ATTN_BACKWARD(attention_backward_bf16_d64, 64, 64)
ATTN_BACKWARD(attention_backward_bf16_d128, 128, 32)
