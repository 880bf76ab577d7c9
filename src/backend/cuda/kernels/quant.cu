// 4-bit blockwise dequantization as bitsandbytes stores it: byte k of packed holds element 2k in its high
// nibble and 2k + 1 in its low nibble; element i = f32(code[nibble] * absmax[i / blocksize]), rounded once
// to out's dtype (bit-exact with the CPU reference).
// Memory plan: one pass, one thread per packed byte (grid-stride, 64-bit indices), writing its two
// elements; the 16-entry code table is staged in shared memory. blockShift >= 0 means blocksize is
// 2^blockShift, so the absmax index is a shift instead of a 64-bit division.
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
