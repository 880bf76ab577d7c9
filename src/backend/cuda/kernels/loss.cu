// Token cross-entropy over logits (N, V) with targets i32 (N); target -100 is ignored (loss 0, zero
// gradient row). A target outside [0, V) that is not -100 is a caller bug the device cannot report: its
// loss and its gradient row are NaN.
// Memory plan: one block per row (grid-strided over rows). Each thread keeps an online (max, sum of
// exp(x - max)) pair in f32 over its strided columns, one read of the row from memory; the pairs merge
// through warp shuffles and a shared array of 32. The backward then reads the row a second time (mostly
// from L2: a 152k-vocab bf16 row is 300 KB) and writes the gradient. Every read of a row happens before the
// block-wide barrier inside the merge and every write after it, so dlogits may be the logits themselves.
#include "common.cuh"

#define IGNORE_INDEX (-100)

// Folds (m2, s2) into (m, s). Two -inf maxima give -inf and 0 (not exp(NaN)); a NaN logit propagates.
__device__ __forceinline__ void lseMerge(float& m, float& s, float m2, float s2) {
  if (m2 > m) {
    s = s * expf(m - m2) + s2;
    m = m2;
  } else if (!(m2 == -INFINITY)) {
    s += s2 * expf(m2 - m);
  }
}

// The row's max and sum of exp(x - max), given to every thread of the block. Contains __syncthreads.
__device__ void rowLogSumExp(const void* logits, int dt, long long base, int vocab, float& maxOut, float& sumOut) {
  __shared__ float maxes[32], sums[32];
  float m = -INFINITY, s = 0.0f;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) lseMerge(m, s, ld(logits, dt, base + j), 1.0f);
  for (int o = 16; o > 0; o >>= 1) lseMerge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) {
    maxes[warp] = m;
    sums[warp] = s;
  }
  __syncthreads();
  m = lane < warps ? maxes[lane] : -INFINITY;
  s = lane < warps ? sums[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) lseMerge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
  maxOut = m;
  sumOut = s;
}

extern "C" __global__ void cross_entropy_forward(float* losses, const void* logits, int logitsDt, const int* targets,
                                                 long long rows, int vocab) {
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    const int target = targets[r];
    if (target == IGNORE_INDEX) {
      if (threadIdx.x == 0) losses[r] = 0.0f;
      continue;
    }
    const long long base = r * vocab;
    float m, s;
    rowLogSumExp(logits, logitsDt, base, vocab, m, s);
    if (threadIdx.x == 0)
      losses[r] = target < 0 || target >= vocab ? TUNA_NAN : m + logf(s) - ld(logits, logitsDt, base + target);
  }
}

extern "C" __global__ void cross_entropy_backward(void* dlogits, int dlogitsDt, const void* logits, int logitsDt,
                                                  const int* targets, long long rows, int vocab, float gradScale,
                                                  float softcap) {
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    const int target = targets[r];
    const long long base = r * vocab;
    if (target == IGNORE_INDEX) {
      for (int j = threadIdx.x; j < vocab; j += blockDim.x) st(dlogits, dlogitsDt, base + j, 0.0f);
      continue;
    }
    float m, s;
    rowLogSumExp(logits, logitsDt, base, vocab, m, s);
    const bool bad = target < 0 || target >= vocab;
    const float invSum = 1.0f / s;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
      const float y = ld(logits, logitsDt, base + j);
      const float p = expf(y - m) * invSum;
      float g = __fmul_rn(j == target ? p - 1.0f : p, gradScale);
      // softcap > 0: the logits are capped y = cap tanh(x / cap); the gradient goes to x through 1 - (y / cap)^2.
      if (softcap > 0.0f) g *= 1.0f - (y / softcap) * (y / softcap);
      st(dlogits, dlogitsDt, base + j, bad ? TUNA_NAN : g);
    }
    // The next row's merge starts with a barrier, so no thread rewrites this row's shared slots early.
  }
}
