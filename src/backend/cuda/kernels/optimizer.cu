// Optimizer kernels: PyTorch's single-tensor AdamW step over flat f32 buffers, and the sum of squares
// used for gradient-norm clipping.
// AdamW follows the CPU reference operation by operation, each rounded to f32 with explicit _rn intrinsics
// (so the compiler cannot fuse them into FMAs); the lerp is the one place torch fuses (fmaf). The host
// computes the scalar hyperparameters in double and passes them as f32, as the reference does.
// Memory plan: AdamW is one grid-stride pass (read params, grads, m, v; write params, m, v). sumSquares is
// two-stage and deterministic: sum_squares_partials writes one double per block into a scratch (gridDim.x),
// sum_squares_final (one block) sums them in a fixed order into scratch[parts].
#include "common.cuh"

extern "C" __global__ void adamw_update(float* params, const float* grads, float* expAvg, float* expAvgSq, long long n,
                                        float decay, float lerpWeight, int smallWeight, float lerpComplement,
                                        float beta2, float sqWeight, float biasCorrection2Sqrt, float eps,
                                        float negStepSize) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float g = grads[i];
    const float m = expAvg[i];
    const float p = __fmul_rn(params[i], decay);
    const float diff = __fsub_rn(g, m);
    const float mi = smallWeight ? fmaf(lerpWeight, diff, m) : fmaf(-diff, lerpComplement, g);
    const float vi = __fadd_rn(__fmul_rn(expAvgSq[i], beta2), __fmul_rn(__fmul_rn(sqWeight, g), g));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), biasCorrection2Sqrt), eps);
    params[i] = __fadd_rn(p, __fdiv_rn(__fmul_rn(negStepSize, mi), denom));
    expAvg[i] = mi;
    expAvgSq[i] = vi;
  }
}

extern "C" __global__ void sum_squares_partials(double* partials, const void* x, int xDt, long long n) {
  __shared__ double scratch[32];
  double sum = 0.0;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const double v = ld(x, xDt, i);
    sum += v * v;
  }
  sum = blockSumDouble(sum, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// One block; writes the total of partials[0, parts) to partials[parts].
extern "C" __global__ void sum_squares_final(double* partials, int parts) {
  __shared__ double scratch[32];
  double sum = 0.0;
  for (int p = threadIdx.x; p < parts; p += blockDim.x) sum += partials[p];
  sum = blockSumDouble(sum, scratch);
  if (threadIdx.x == 0) partials[parts] = sum;
}
