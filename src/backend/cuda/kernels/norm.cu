// RMSNorm in HF LlamaRMSNorm's order: rstd = 1/sqrt(mean(x^2) + eps) in f32, n = x * rstd rounded to x's
// dtype, out = n * weight; the backward gives dx = rstd * (g - n * mean(g * n)) with g = dout * weight and
// dweight += sum over rows of dout * cast(n).
// Memory plan: one block per row (grid-strided over rows); each row is read twice (reduction, then the
// elementwise pass), the second read mostly from L1/L2. Per-thread sums in f32, combined by blockSum.
// dweight is deterministic: every backward block keeps its rows' dout * cast(n) in dynamic shared memory
// (C floats; thread t owns columns t, t + blockDim, ... so no synchronization is needed), writes it as one
// row of an f32 scratch (gridDim.x, C), and rmsnorm_dweight_reduce sums those rows per column in a fixed
// order (in double) and adds the total into dweight once.
#include "common.cuh"

// plusOne (Gemma): out = x * rs * (1 + w) in f32, rounded once; the backward alike with n unrounded.
extern "C" __global__ void rmsnorm_forward(void* out, int outDt, float* rstd, const void* x, int xDt,
                                           const void* weight, int weightDt, long long rows, int cols, float eps,
                                           int plusOne) {
  __shared__ float scratch[32];
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    const long long base = r * cols;
    float sumSquares = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
      const float v = ld(x, xDt, base + j);
      sumSquares = fmaf(v, v, sumSquares);
    }
    sumSquares = blockSum(sumSquares, scratch);
    // The last steps in double as the reference does, rounded once to f32.
    const float rs = (float)(1.0 / sqrt((double)sumSquares / cols + (double)eps));
    if (threadIdx.x == 0) rstd[r] = rs;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
      const float raw = __fmul_rn(ld(x, xDt, base + j), rs);
      const float n = plusOne ? raw : roundTo(xDt, raw);
      const float w = plusOne ? __fadd_rn(1.0f, ld(weight, weightDt, j)) : ld(weight, weightDt, j);
      st(out, outDt, base + j, __fmul_rn(n, w));
    }
  }
}

// dweightPartials: null, or an f32 scratch (gridDim.x, cols) that this kernel overwrites entirely; then the
// launch carries cols * 4 bytes of dynamic shared memory.
extern "C" __global__ void rmsnorm_backward(void* dx, int dxDt, float* dweightPartials, const void* dout, int doutDt,
                                            const void* x, int xDt, const void* weight, int weightDt, const float* rstd,
                                            long long rows, int cols, int accumulate, int plusOne) {
  extern __shared__ float dweightShared[];
  __shared__ float scratch[32];
  const bool wantDweight = dweightPartials != nullptr;
  if (wantDweight)
    for (int j = threadIdx.x; j < cols; j += blockDim.x) dweightShared[j] = 0.0f;
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    const long long base = r * cols;
    const float rs = rstd[r];
    float dot = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
      const float w = plusOne ? __fadd_rn(1.0f, ld(weight, weightDt, j)) : ld(weight, weightDt, j);
      const float g = ld(dout, doutDt, base + j) * w;
      dot = fmaf(g, ld(x, xDt, base + j) * rs, dot);
    }
    const float meanDot = blockSum(dot, scratch) / cols;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
      const float d = ld(dout, doutDt, base + j);
      const float xv = ld(x, xDt, base + j);
      const float w = plusOne ? __fadd_rn(1.0f, ld(weight, weightDt, j)) : ld(weight, weightDt, j);
      float v = rs * (d * w - xv * rs * meanDot);
      if (accumulate) v = __fadd_rn(ld(dx, dxDt, base + j), v);
      st(dx, dxDt, base + j, v);
      const float n = __fmul_rn(xv, rs);
      if (wantDweight) dweightShared[j] = fmaf(d, plusOne ? n : roundTo(xDt, n), dweightShared[j]);
    }
  }
  if (wantDweight)
    for (int j = threadIdx.x; j < cols; j += blockDim.x) dweightPartials[(long long)blockIdx.x * cols + j] = dweightShared[j];
}

// dweight (cols) += column sums of partials (parts, cols), summed in a fixed order.
extern "C" __global__ void rmsnorm_dweight_reduce(void* dweight, int dweightDt, const float* partials, int parts, int cols) {
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x) {
    double sum = 0.0;
    for (int p = 0; p < parts; p++) sum += partials[(long long)p * cols + j];
    st(dweight, dweightDt, j, (float)((double)ld(dweight, dweightDt, j) + sum));
  }
}
