// Attention of Q new tokens against a KV cache (incremental decoding), any float dtype, head dim D <= 256:
// query i sits at position pastLength + i and sees cache rows [0, pastLength + i] of kCache/vCache (Tmax, KV, D).
//
// attention_decode: grid (Q * H, splits), 128 threads. Block (row = i * H + h, split) covers cache rows
// [split * chunk, split * chunk + chunk) clipped to the query's last visible row; warp w takes rows w, w + 4, ...
// with an online softmax in f32 (lane owns columns lane + 32 t, t < 8; one warp sum per row for the score).
// The four warps merge through static shared memory (4 x 256 floats). With one split the block writes out;
// otherwise it writes (acc[D], max, sum) to partial (Q * H, splits, D + 2), max in log2 units, and
// attention_decode_combine (grid Q * H, 128 threads) merges the splits. A split with no visible row writes
// max = -inf, sum = 0. Sliding window (window > 0; 0 = none): query i sees rows (pastLength + i - window,
// pastLength + i]; the splits cover rows from `base` (the first row any query of the call sees) on.
#include "common.cuh"
#include "attention-score.cuh"

__device__ __forceinline__ float decodeInf() { return __int_as_float(0x7f800000); }

extern "C" __global__ void __launch_bounds__(128)
    attention_decode(void* out, float* partial, const void* q, const void* kCache, const void* vCache, int dt,
                     int heads, int kvHeads, int dim, int pastLength, int chunk, float scaleLog2, int window, int base,
                     float softcap) {
  __shared__ float warpMaxS[4], warpSumS[4];
  __shared__ float warpAcc[4][256];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x, i = row / heads, h = row - i * heads, split = blockIdx.y;
  const int kvh = h / (heads / kvHeads);
  const int splitStart = base + split * chunk, end = min(splitStart + chunk, pastLength + i + 1);
  const int start = window > 0 ? max(splitStart, pastLength + i - window + 1) : splitStart;
  const float inf = decodeInf();

  float qv[8], acc[8];
#pragma unroll
  for (int t = 0; t < 8; ++t) {
    const int d = lane + 32 * t;
    qv[t] = d < dim ? ld(q, dt, (long long)row * dim + d) : 0.0f;
    acc[t] = 0.0f;
  }
  float m = -inf, l = 0.0f;
  for (int j = start + warp; j < end; j += 4) {
    const long long base = ((long long)j * kvHeads + kvh) * dim;
    float dot = 0.0f;
#pragma unroll
    for (int t = 0; t < 8; ++t) {
      const int d = lane + 32 * t;
      if (d < dim) dot = fmaf(qv[t], ld(kCache, dt, base + d), dot);
    }
    float slope;
    const float s = attnScoreLog2(warpSum(dot), scaleLog2, softcap, slope);
    const float mNew = fmaxf(m, s);
    const float corr = exp2f(m - mNew), p = exp2f(s - mNew);
    l = l * corr + p;
    m = mNew;
#pragma unroll
    for (int t = 0; t < 8; ++t) {
      const int d = lane + 32 * t;
      if (d < dim) acc[t] = fmaf(p, ld(vCache, dt, base + d), acc[t] * corr);
    }
  }
  if (lane == 0) {
    warpMaxS[warp] = m;
    warpSumS[warp] = l;
  }
#pragma unroll
  for (int t = 0; t < 8; ++t) {
    const int d = lane + 32 * t;
    if (d < dim) warpAcc[warp][d] = acc[t];
  }
  __syncthreads();
  const float mAll = fmaxf(fmaxf(warpMaxS[0], warpMaxS[1]), fmaxf(warpMaxS[2], warpMaxS[3]));
  float w[4], sum = 0.0f;
#pragma unroll
  for (int x = 0; x < 4; ++x) {
    w[x] = warpMaxS[x] == -inf ? 0.0f : exp2f(warpMaxS[x] - mAll);
    sum += warpSumS[x] * w[x];
  }
  for (int d = threadIdx.x; d < dim; d += blockDim.x) {
    const float a = warpAcc[0][d] * w[0] + warpAcc[1][d] * w[1] + warpAcc[2][d] * w[2] + warpAcc[3][d] * w[3];
    if (gridDim.y == 1) {
      st(out, dt, (long long)row * dim + d, a / sum);
    } else {
      float* part = partial + ((long long)row * gridDim.y + split) * (dim + 2);
      part[d] = a;
      if (d == 0) {
        part[dim] = mAll;
        part[dim + 1] = sum;
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(128)
    attention_decode_combine(void* out, const float* partial, int dt, int dim, int splits) {
  const int row = blockIdx.x;
  const float inf = decodeInf();
  const float* part = partial + (long long)row * splits * (dim + 2);
  float mAll = -inf;
  for (int s = 0; s < splits; ++s) mAll = fmaxf(mAll, part[s * (dim + 2) + dim]);
  float sum = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float ms = part[s * (dim + 2) + dim];
    if (ms != -inf) sum += part[s * (dim + 2) + dim + 1] * exp2f(ms - mAll);
  }
  for (int d = threadIdx.x; d < dim; d += blockDim.x) {
    float a = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float ms = part[s * (dim + 2) + dim];
      if (ms != -inf) a += part[s * (dim + 2) + d] * exp2f(ms - mAll);
    }
    st(out, dt, (long long)row * dim + d, a / sum);
  }
}
