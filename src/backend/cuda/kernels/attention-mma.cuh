// Tile helpers for the bf16 attention kernels (attention-mma.cu, attention-mma-backward.cu): ldmatrix addressing
// of mma.sync m16n8k16 fragments from padded shared tiles, cp.async row loads, quad reductions and paired f32
// atomics; the PTX itself is in attention-ptx.cuh.
//
// Fragment layouts (lane = 4 g + c, g = lane / 4, c = lane % 4; each u32 holds two bf16, lower index low):
//   A (16 x 16, row-major): a[0] = (row g, cols 2c, 2c+1), a[1] = (row g+8, same cols), a[2] = (row g, cols
//   2c+8, 2c+9), a[3] = (row g+8, cols 2c+8, 2c+9).  B (16 x 8, k x n): b[0] = (k 2c, 2c+1; n g), b[1] = (k
//   2c+8, 2c+9; n g).  C (16 x 8, f32): c[0], c[1] = (row g, cols 2c, 2c+1), c[2], c[3] = (row g+8, same cols).
// So two C tiles of adjacent 8 columns, rounded to bf16, are one A fragment (how P and dS feed the next mma).
#pragma once
#include "attention-ptx.cuh"
#include "attention-score.cuh"

typedef __nv_bfloat16 bf16;

// Address, for ldsm4, of the A fragment (rows r0..r0+15, cols c0..c0+15) of a row-major tile: with ldsm4
// it loads A itself; with ldsm4t on a tile stored as [k][n] it loads B for two n8 tiles (n c0.., c0+8..)
// over k r0..r0+15 as {r[0], r[1]} and {r[2], r[3]}.
__device__ __forceinline__ unsigned fragAddrA(const bf16* tile, int stride, int r0, int c0, int lane) {
  return smemAddr(tile + (r0 + (lane & 15)) * stride + c0 + (lane >> 4) * 8);
}
// Address, for ldsm4, of B for two n8 tiles from a tile stored as [n][k] (rows n0..n0+15, k c0..c0+15):
// {r[0], r[1]} is n0..n0+7 and {r[2], r[3]} is n0+8..n0+15. With ldsm4t on a tile stored as [k][m] it loads
// the A fragment of the transpose (m c0..c0+15, k n0..n0+15).
__device__ __forceinline__ unsigned fragAddrB(const bf16* tile, int stride, int n0, int c0, int lane) {
  return smemAddr(tile + (n0 + (lane & 7) + ((lane >> 4) << 3)) * stride + c0 + ((lane >> 3) & 1) * 8);
}

// rows x D bf16 from rows rowStart.. of a strided global tensor (row r at src + r * rowStride) into shared
// (row stride STR elements); rows at or past rowEnd are zero-filled. THREADS threads, 16 bytes each per step.
template <int D, int STR, int THREADS = 128>
__device__ __forceinline__ void loadRows(bf16* dst, const bf16* src, long long rowStride, int rowStart, int rows,
                                         int rowEnd) {
  constexpr int CHUNKS = D / 8;
  for (int c = threadIdx.x; c < rows * CHUNKS; c += THREADS) {
    const int r = c / CHUNKS, col = (c - r * CHUNKS) * 8, row = rowStart + r;
    const bool valid = row < rowEnd;
    cpAsync16(smemAddr(dst + r * STR + col), src + (long long)(valid ? row : rowStart) * rowStride + col, valid);
  }
}

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
