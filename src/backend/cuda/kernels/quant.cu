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
