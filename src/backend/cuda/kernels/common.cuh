// Shared device helpers for tuna's kernels: float loads and stores through a runtime dtype code
// (0 = f32, 1 = bf16, 2 = f16; see FLOAT_DTYPE_CODE in ../types.ts), and warp/block reductions.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define TUNA_F32 0
#define TUNA_BF16 1
#define TUNA_F16 2

// NVRTC has no <math.h>: INFINITY may be undefined there. TUNA_NAN is a quiet NaN for flagging bad inputs
// (an id or target out of range) that a kernel cannot report otherwise.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#define TUNA_NAN __int_as_float(0x7fc00000)

// Element i of a float tensor of dtype code dt, widened to float. dt is uniform across a launch, so the
// switch costs one well-predicted branch; elementwise kernels stay memory-bound.
__device__ __forceinline__ float ld(const void* p, int dt, long long i) {
  if (dt == TUNA_BF16) return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(p)[i]);
  if (dt == TUNA_F16) return __half2float(reinterpret_cast<const __half*>(p)[i]);
  return reinterpret_cast<const float*>(p)[i];
}

// Stores v into element i, rounding to nearest even for bf16/f16 (as the CPU reference does).
__device__ __forceinline__ void st(void* p, int dt, long long i, float v) {
  if (dt == TUNA_BF16) reinterpret_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else if (dt == TUNA_F16) reinterpret_cast<__half*>(p)[i] = __float2half_rn(v);
  else reinterpret_cast<float*>(p)[i] = v;
}

__device__ __forceinline__ float warpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` is __shared__ float[32]. Contains __syncthreads: call from all threads.
__device__ __forceinline__ float blockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warpSum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  return warpSum(v);
}

__device__ __forceinline__ float blockMax(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warpMax(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : -INFINITY;
  return warpMax(v);
}

// v rounded to dtype dt and widened back (HF's `.to(dtype)` inside an f32 computation).
__device__ __forceinline__ float roundTo(int dt, float v) {
  if (dt == TUNA_BF16) return __bfloat162float(__float2bfloat16_rn(v));
  if (dt == TUNA_F16) return __half2float(__float2half_rn(v));
  return v;
}

__device__ __forceinline__ double warpSumDouble(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// blockSum in double; `scratch` is __shared__ double[32]. Contains __syncthreads: call from all threads.
__device__ __forceinline__ double blockSumDouble(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warpSumDouble(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0;
  return warpSumDouble(v);
}

