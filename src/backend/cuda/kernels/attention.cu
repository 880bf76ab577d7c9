// Causal grouped-query attention over packed documents, generic path: any float dtype (through ld/st) and any
// head dim D <= 256, f32 math throughout. The bf16 tensor-core path for D = 64/128 is attention-mma.cu.
//
// Tile tables (built on the host from cuSeqlens): int32 triples (docStart, docEnd, rowStart), longest work
// first; block b handles tile b / heads (or / kvHeads) for head b % heads. Scores are scaled by scaleLog2 =
// scale * log2(e) and exponentiated with exp2; lse is stored in natural log like the CPU reference.
//
// attention_forward_generic: 128 threads, 16 query rows per block (4 per warp), keys in tiles of 32 (lane j
// scores key j). Dynamic shared memory, f32: q (16, D), k (32, D + 1) padded against bank conflicts, v (32, D)
// = (16 D + 32 (D + 1) + 32 D) * 4 bytes. Per-row running max and per-lane partial sums (online softmax);
// each lane owns output columns lane + 32 t, t < 8.
// attention_backward_generic: FA2 order. 128 threads, one block per (32-key tile, kv head) that loops over
// the query heads of its group and the query tiles (16 rows) at or after its keys; dk/dv accumulate in shared
// memory (so no atomics on them), dq contributions go by atomicAdd into an f32 scratch (N, H, D).
// Shared, f32: k and v (32, D + 1), dk and dv (32, D), q and dout (16, D), p and ds (16, 33), lse and delta
// (16) = (160 D + 1152) * 4 bytes. dS is kept unscaled: dk is scaled once when written, dq in the convert.
// attention_backward_delta: delta = rowsum(dout * out) in f32, one warp per (token, head).
// Sliding window (window > 0; 0 = none): query i sees keys j with i - window < j <= i. The forward starts its key
// loop at the tile's first visible key; the backward stops its query loop after the last query that sees the key
// tile; both mask the rest. Soft-capping (softcap > 0) caps each score (attnScoreLog2); the backward multiplies dS
// by the cap's slope.
// attention_backward_dq: dq = scale * dqAcc, rounded to dq's dtype (also dk, dv of the split tensor-core backward).
#include "common.cuh"
#include "attention-score.cuh"

#define ATTN_LN2 0.69314718055994530942f
#define ATTN_LOG2E 1.44269504088896340736f

__device__ __forceinline__ float attnInf() { return __int_as_float(0x7f800000); }

extern "C" __global__ void __launch_bounds__(128)
    attention_forward_generic(void* out, float* lse, const void* q, const void* k, const void* v, const int* tiles, int dt,
                              int heads, int kvHeads, int dim, float scaleLog2, int window, float softcap) {
  extern __shared__ float smem[];
  float* qs = smem;                   // (16, D)
  float* ks = qs + 16 * dim;          // (32, D + 1)
  float* vs = ks + 32 * (dim + 1);    // (32, D)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int tile = blockIdx.x / heads, h = blockIdx.x - tile * heads;
  const int docStart = tiles[3 * tile], docEnd = tiles[3 * tile + 1], qStart = tiles[3 * tile + 2];
  const int kvh = h / (heads / kvHeads);
  const long long qRow = (long long)heads * dim, kRow = (long long)kvHeads * dim;
  const float inf = attnInf();

  for (int idx = threadIdx.x; idx < 16 * dim; idx += blockDim.x) {
    const int r = idx / dim, d = idx - r * dim, i = qStart + r;
    qs[idx] = i < docEnd ? ld(q, dt, i * qRow + (long long)h * dim + d) : 0.0f;
  }
  const int qLast = min(qStart + 16, docEnd) - 1;  // last real query row of the tile
  float o[4][8], m[4], l[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    m[r] = -inf;
    l[r] = 0.0f;
#pragma unroll
    for (int t = 0; t < 8; ++t) o[r][t] = 0.0f;
  }
  const int kFirst = window > 0 ? max(docStart, qStart - window + 1) : docStart;
  for (int kStart = kFirst; kStart <= qLast; kStart += 32) {
    __syncthreads();  // the previous tile's readers are done (and q is visible the first time)
    for (int idx = threadIdx.x; idx < 32 * dim; idx += blockDim.x) {
      const int r = idx / dim, d = idx - r * dim, j = kStart + r;
      const long long at = j * kRow + (long long)kvh * dim + d;
      ks[r * (dim + 1) + d] = j <= qLast ? ld(k, dt, at) : 0.0f;
      vs[idx] = j <= qLast ? ld(v, dt, at) : 0.0f;
    }
    __syncthreads();
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const float* kr = ks + lane * (dim + 1);
    const float* qr = qs + warp * 4 * dim;
    for (int d = 0; d < dim; ++d) {
      const float kd = kr[d];
#pragma unroll
      for (int r = 0; r < 4; ++r) s[r] = fmaf(qr[r * dim + d], kd, s[r]);
    }
    const int j = kStart + lane;
    float p[4];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int i = qStart + warp * 4 + r;
      float slope;
      const float x = (j <= i && i < docEnd && (window <= 0 || j > i - window)) ? attnScoreLog2(s[r], scaleLog2, softcap, slope) : -inf;
      const float mNew = fmaxf(m[r], warpMax(x));
      const float mUse = mNew == -inf ? 0.0f : mNew;  // a row with nothing visible yet stays at zero
      const float corr = exp2f(m[r] - mUse);
      p[r] = exp2f(x - mUse);
      l[r] = l[r] * corr + p[r];  // per-lane partial sum, reduced once at the end
      m[r] = mNew;
#pragma unroll
      for (int t = 0; t < 8; ++t) o[r][t] *= corr;
    }
    for (int jj = 0; jj < 32; ++jj) {
      const float* vr = vs + jj * dim;
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const float pj = __shfl_sync(0xffffffffu, p[r], jj);
#pragma unroll
        for (int t = 0; t < 8; ++t) {
          const int d = lane + 32 * t;
          if (d < dim) o[r][t] = fmaf(pj, vr[d], o[r][t]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int i = qStart + warp * 4 + r;
    const float sum = warpSum(l[r]);
    if (i >= docEnd) continue;
    const float inv = 1.0f / sum;
#pragma unroll
    for (int t = 0; t < 8; ++t) {
      const int d = lane + 32 * t;
      if (d < dim) st(out, dt, i * qRow + (long long)h * dim + d, o[r][t] * inv);
    }
    if (lane == 0) lse[(long long)i * heads + h] = (m[r] + log2f(sum)) * ATTN_LN2;
  }
}

extern "C" __global__ void __launch_bounds__(128)
    attention_backward_generic(float* dqAcc, void* dk, void* dv, const void* q, const void* k, const void* v,
                               const void* dout, const float* lse, const float* delta, const int* tiles, int dt,
                               int heads, int kvHeads, int dim, float scaleLog2, float scale, int window,
                               float softcap) {
  extern __shared__ float smem[];
  const int kp = dim + 1;
  float* ks = smem;             // (32, D + 1)
  float* vs = ks + 32 * kp;     // (32, D + 1)
  float* dks = vs + 32 * kp;    // (32, D)
  float* dvs = dks + 32 * dim;  // (32, D)
  float* qs = dvs + 32 * dim;   // (16, D)
  float* dos = qs + 16 * dim;   // (16, D)
  float* ps = dos + 16 * dim;   // (16, 33)
  float* dss = ps + 16 * 33;    // (16, 33)
  float* lseS = dss + 16 * 33;  // (16) lse * log2(e), +inf past the document
  float* dltS = lseS + 16;      // (16)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int tile = blockIdx.x / kvHeads, kvh = blockIdx.x - tile * kvHeads;
  const int docStart = tiles[3 * tile], docEnd = tiles[3 * tile + 1], kStart = tiles[3 * tile + 2];
  (void)docStart;
  const int group = heads / kvHeads;
  const long long qRow = (long long)heads * dim, kRow = (long long)kvHeads * dim;
  const float inf = attnInf();

  for (int idx = threadIdx.x; idx < 32 * dim; idx += blockDim.x) {
    const int r = idx / dim, d = idx - r * dim, j = kStart + r;
    const long long at = j * kRow + (long long)kvh * dim + d;
    ks[r * kp + d] = j < docEnd ? ld(k, dt, at) : 0.0f;
    vs[r * kp + d] = j < docEnd ? ld(v, dt, at) : 0.0f;
    dks[idx] = 0.0f;
    dvs[idx] = 0.0f;
  }
  const int j = kStart + lane;
  // The last query that sees one of this tile's 32 keys is kStart + 31 + window - 1.
  const int qEnd = window > 0 ? min(docEnd, kStart + 31 + window) : docEnd;
  for (int hh = 0; hh < group; ++hh) {
    const int h = kvh * group + hh;
    for (int qStart = kStart; qStart < qEnd; qStart += 16) {
      __syncthreads();  // readers of the previous query tile are done
      for (int idx = threadIdx.x; idx < 16 * dim; idx += blockDim.x) {
        const int r = idx / dim, d = idx - r * dim, i = qStart + r;
        const long long at = i * qRow + (long long)h * dim + d;
        qs[idx] = i < docEnd ? ld(q, dt, at) : 0.0f;
        dos[idx] = i < docEnd ? ld(dout, dt, at) : 0.0f;
      }
      if (threadIdx.x < 16) {
        const int i = qStart + threadIdx.x;
        lseS[threadIdx.x] = i < docEnd ? lse[(long long)i * heads + h] * ATTN_LOG2E : inf;
        dltS[threadIdx.x] = i < docEnd ? delta[(long long)i * heads + h] : 0.0f;
      }
      __syncthreads();
      // Warp w scores query rows 4w..4w+3 against key `lane`: P and dP = dout . v.
      float s[4] = {0.0f, 0.0f, 0.0f, 0.0f}, dp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      const float* kr = ks + lane * kp;
      const float* vr = vs + lane * kp;
      for (int d = 0; d < dim; ++d) {
        const float kd = kr[d], vd = vr[d];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          s[r] = fmaf(qs[(warp * 4 + r) * dim + d], kd, s[r]);
          dp[r] = fmaf(dos[(warp * 4 + r) * dim + d], vd, dp[r]);
        }
      }
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int row = warp * 4 + r, i = qStart + row;
        float slope = 1.0f;
        const float p = (j <= i && (window <= 0 || j > i - window)) ? exp2f(attnScoreLog2(s[r], scaleLog2, softcap, slope) - lseS[row]) : 0.0f;
        ps[row * 33 + lane] = p;
        dss[row * 33 + lane] = p * (dp[r] - dltS[row]) * slope;
      }
      __syncthreads();
      for (int idx = threadIdx.x; idx < 32 * dim; idx += blockDim.x) {
        const int kj = idx / dim, d = idx - kj * dim;
        float accV = 0.0f, accK = 0.0f;
#pragma unroll 4
        for (int r = 0; r < 16; ++r) {
          accV = fmaf(ps[r * 33 + kj], dos[r * dim + d], accV);
          accK = fmaf(dss[r * 33 + kj], qs[r * dim + d], accK);
        }
        dvs[idx] += accV;
        dks[idx] += accK;
      }
      for (int idx = threadIdx.x; idx < 16 * dim; idx += blockDim.x) {
        const int r = idx / dim, d = idx - r * dim, i = qStart + r;
        if (i >= docEnd) continue;
        float acc = 0.0f;
#pragma unroll 4
        for (int kj = 0; kj < 32; ++kj) acc = fmaf(dss[r * 33 + kj], ks[kj * kp + d], acc);
        atomicAdd(dqAcc + i * qRow + (long long)h * dim + d, acc);
      }
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < 32 * dim; idx += blockDim.x) {
    const int r = idx / dim, d = idx - r * dim, jr = kStart + r;
    if (jr >= docEnd) continue;
    const long long at = jr * kRow + (long long)kvh * dim + d;
    st(dk, dt, at, dks[idx] * scale);
    st(dv, dt, at, dvs[idx]);
  }
}

// rows = N * H; one warp per row.
extern "C" __global__ void __launch_bounds__(128)
    attention_backward_delta(float* delta, const void* dout, const void* out, int dt, long long rows, int dim) {
  const long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int lane = threadIdx.x & 31;
  float acc = 0.0f;
  for (int d = lane; d < dim; d += 32) acc = fmaf(ld(dout, dt, row * dim + d), ld(out, dt, row * dim + d), acc);
  acc = warpSum(acc);
  if (lane == 0) delta[row] = acc;
}

extern "C" __global__ void attention_backward_dq(void* dq, const float* dqAcc, int dt, long long n, float scale) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    st(dq, dt, i, dqAcc[i] * scale);
}
