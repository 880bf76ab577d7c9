// 4-bit blockwise dequantization as bitsandbytes stores it: byte k of packed holds element 2k in its high
// nibble and 2k + 1 in its low nibble; element i = f32(code[nibble] * absmax[i / blocksize]), rounded once
// to out's dtype (bit-exact with the CPU reference).
// Memory plan: one pass, one thread per packed byte (grid-stride, 64-bit indices), writing its two
// elements; the 16-entry code table is staged in shared memory. blockShift >= 0 means blocksize is
// 2^blockShift, so the absmax index is a shift instead of a 64-bit division.
// dequantize_4bit_bf16x32 is the fast path for bf16 output (what every QLoRA GEMM reads): one thread per
// 16 packed bytes (32 elements, one absmax since blocksize >= 32 is a power of two), a 16-byte load and
// four 16-byte stores, so the pass runs near HBM bandwidth instead of at byte-sized transactions.
#include "common.cuh"

extern "C" __global__ void dequantize_4bit(void* out, int outDt, const unsigned char* packed, const float* absmax,
                                           const float* code, long long n, long long blocksize, int blockShift) {
  __shared__ float table[16];
  if (threadIdx.x < 16) table[threadIdx.x] = code[threadIdx.x];
  __syncthreads();
  const long long bytes = (n + 1) / 2;
  for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < bytes; k += (long long)gridDim.x * blockDim.x) {
    const unsigned int byte = packed[k];
    const long long i = 2 * k;
    const long long block0 = blockShift >= 0 ? i >> blockShift : i / blocksize;
    st(out, outDt, i, __fmul_rn(table[byte >> 4], absmax[block0]));
    if (i + 1 < n) {
      const long long block1 = blockShift >= 0 ? (i + 1) >> blockShift : (i + 1) / blocksize;
      st(out, outDt, i + 1, __fmul_rn(table[byte & 15u], absmax[block1]));
    }
  }
}

extern "C" __global__ void dequantize_4bit_bf16x32(uint4* out, const uint4* packed, const float* absmax, const float* code,
                                                   long long groups, int blockShift) {
  __shared__ float table[16];
  if (threadIdx.x < 16) table[threadIdx.x] = code[threadIdx.x];
  __syncthreads();
  for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += (long long)gridDim.x * blockDim.x) {
    const uint4 p = packed[g];
    const float a = absmax[(g * 32) >> blockShift];
    const unsigned int words[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
    for (int w = 0; w < 4; w++) {
      unsigned int r[4];
#pragma unroll
      for (int b = 0; b < 4; b++) {
        // Byte 4w + b (little-endian within the word) holds elements 2(4w + b) (high nibble) and 2(4w + b) + 1.
        const unsigned int byte = (words[w] >> (8 * b)) & 0xffu;
        const unsigned short hi = __bfloat16_as_ushort(__float2bfloat16_rn(__fmul_rn(table[byte >> 4], a)));
        const unsigned short lo = __bfloat16_as_ushort(__float2bfloat16_rn(__fmul_rn(table[byte & 15u], a)));
        r[b] = (unsigned int)hi | ((unsigned int)lo << 16);
      }
      out[g * 4 + w] = make_uint4(r[0], r[1], r[2], r[3]);
    }
  }
}

// quantize_4bit: bitsandbytes' quantize_4bit, one warp per block of `blocksize` elements. absmax starts at
// -FLT_MAX for a full block and 0 for a partial last one (the kernel's zero padding), fmaxf skips NaN;
// each value is scaled as float32(x * float32(1 / absmax)) and coded by counting the thresholds it exceeds
// (the strict-> trees of dQuantizeNF4 / dQuantizeFP4, thresholds passed in ascending order). FP4 maps the
// interval index through intervalCodes and takes the sign from x < 0. An odd count pads with code(0 * inv).
__device__ __forceinline__ unsigned int code4(float v, const float* thr, int nthr, const int* intervalCodes) {
  if (intervalCodes == nullptr) {
    unsigned int k = 0;
    for (int t = 0; t < nthr; t++) k += v > thr[t] ? 1u : 0u;
    return k;
  }
  const float a = fabsf(v);
  int k = 0;
  for (int t = 0; t < nthr; t++) k += a > thr[t] ? 1 : 0;
  return (unsigned int)intervalCodes[k] + (v < 0.0f ? 8u : 0u);
}

extern "C" __global__ void quantize_4bit(unsigned char* packed, float* absmax, const void* x, int xDt, long long n, int blocksize,
                                         const float* thresholds, int nthr, const int* intervalCodes) {
  __shared__ float thr[16];
  __shared__ int codes[16];
  if (threadIdx.x < nthr) thr[threadIdx.x] = thresholds[threadIdx.x];
  if (intervalCodes != nullptr && threadIdx.x <= nthr) codes[threadIdx.x] = intervalCodes[threadIdx.x];
  __syncthreads();
  const int* ic = intervalCodes == nullptr ? nullptr : codes;
  const int lane = threadIdx.x & 31;
  const long long warpsPerGrid = (long long)gridDim.x * (blockDim.x >> 5);
  const long long blocks = (n + blocksize - 1) / blocksize;
  for (long long b = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); b < blocks; b += warpsPerGrid) {
    const long long start = b * blocksize;
    const int count = (int)min((long long)blocksize, n - start);
    float m = count == blocksize ? -3.402823466e38f : 0.0f;
    for (int j = lane; j < count; j += 32) m = fmaxf(m, fabsf(ld(x, xDt, start + j)));
    m = warpMax(m);
    if (lane == 0) absmax[b] = m;
    const float inv = __fdiv_rn(1.0f, m);
    for (int j = 2 * lane; j < count; j += 64) {
      const unsigned int hi = code4(__fmul_rn(ld(x, xDt, start + j), inv), thr, nthr, ic);
      const float second = j + 1 < count ? __fmul_rn(ld(x, xDt, start + j + 1), inv) : __fmul_rn(0.0f, inv);
      const unsigned int lo = code4(second, thr, nthr, ic);
      packed[(start + j) >> 1] = (unsigned char)((hi << 4) | lo);
    }
  }
}
