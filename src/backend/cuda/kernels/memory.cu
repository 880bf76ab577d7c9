// Memory kernels: fill a tensor with one element bit pattern (any dtype: the host encodes the value), and
// convert between float dtypes (f32, bf16, f16) through f32 with round-to-nearest-even, as the CPU
// reference's copy does.
// Memory plan: grid-stride loops over the n elements with 64-bit indices, one element per thread per step.
// Fills whose bytes are all equal (zeroing above all) go to the driver's memset instead.
#include "common.cuh"

extern "C" __global__ void fill_u32(unsigned int* t, unsigned int pattern, long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    t[i] = pattern;
}

extern "C" __global__ void fill_u16(unsigned short* t, unsigned int pattern, long long n) {
  const unsigned short v = (unsigned short)pattern;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    t[i] = v;
}

extern "C" __global__ void convert(void* dst, int dstDt, const void* src, int srcDt, long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    st(dst, dstDt, i, ld(src, srcDt, i));
}
