// Elementwise ops: add, scale, dropout, SwiGLU/GeGLU forward/backward, soft-capping, and the bias pair (addBias, biasBackward).
// Each element is loaded as f32 (ld), computed in f32 and stored once (st rounds to the output's dtype).
// add, scale and dropout are single correctly rounded f32 operations, so they equal the CPU reference
// exactly; SwiGLU uses expf (a few ulp from the reference's float64 exp).
// Memory plan: grid-stride loops over the n elements (64-bit indices), one element per thread per step;
// an output may be exactly an input because each element is read before it is written. addBias runs on a
// 2D grid (x: columns, y: rows, strided) so no index division is needed. biasBackward is deterministic:
// bias_backward_partials gives each (32-column, row-chunk) block an f32 column sum written as one row of a
// scratch (gridDim.y, F); bias_backward_reduce sums those rows per column in a fixed order and adds once.
#include "common.cuh"

#define GRID_STRIDE(i, n) \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

extern "C" __global__ void add(void* out, int outDt, const void* a, int aDt, const void* b, int bDt, long long n) {
  GRID_STRIDE(i, n) st(out, outDt, i, __fadd_rn(ld(a, aDt, i), ld(b, bDt, i)));
}

extern "C" __global__ void scale(void* x, int xDt, float s, long long n) {
  GRID_STRIDE(i, n) st(x, xDt, i, __fmul_rn(ld(x, xDt, i), s));
}

// useMask 0 copies x (p = 0). A mask byte other than 0 or 1 is a caller bug: it gives NaN.
// dropoutMask: src/util/dropout-hash.ts, word for word (32-bit wrapping multiplies as Math.imul).
__device__ __forceinline__ unsigned int fmix32(unsigned int h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  return h ^ (h >> 16);
}

extern "C" __global__ void dropout_mask(unsigned char* mask, long long n, unsigned int s0, unsigned int s1, unsigned int threshold) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const unsigned int h = fmix32(fmix32((unsigned int)i * 0x9e3779b9u ^ s0) ^ s1);
    mask[i] = (h >> 8) >= threshold ? 1 : 0;
  }
}

extern "C" __global__ void dropout_apply(void* out, int outDt, const void* x, int xDt, const unsigned char* mask,
                                         float factor, int useMask, long long n) {
  GRID_STRIDE(i, n) {
    const float v = ld(x, xDt, i);
    if (!useMask) {
      st(out, outDt, i, v);
    } else {
      const unsigned char m = mask[i];
      st(out, outDt, i, m == 1 ? __fmul_rn(v, factor) : m == 0 ? 0.0f : TUNA_NAN);
    }
  }
}

// The gated MLP's activation and its slope: act 0 = silu (SwiGLU), 1 = tanh GELU (GeGLU, PyTorch's
// gelu(approximate="tanh")): 0.5 g (1 + tanh(u)), u = sqrt(2/pi) (g + 0.044715 g^3).
__device__ __forceinline__ void gatedActivation(float g, int act, float& value, float& slope) {
  if (act == 0) {
    const float sig = 1.0f / (1.0f + expf(-g));
    value = g * sig;
    slope = sig * (1.0f + g * (1.0f - sig));
  } else {
    const float c = 0.7978845608028654f, k = 0.044715f;
    const float t = tanhf(c * (g + k * g * g * g));
    value = 0.5f * g * (1.0f + t);
    slope = 0.5f * (1.0f + t) + 0.5f * g * (1.0f - t * t) * c * (1.0f + 3.0f * k * g * g);
  }
}

extern "C" __global__ void swiglu_forward(void* out, int outDt, const void* gate, int gateDt, const void* up, int upDt,
                                          long long n, int act) {
  GRID_STRIDE(i, n) {
    float value, slope;
    gatedActivation(ld(gate, gateDt, i), act, value, slope);
    st(out, outDt, i, value * ld(up, upDt, i));
  }
}

extern "C" __global__ void swiglu_backward(void* dgate, int dgateDt, void* dup, int dupDt, const void* dout, int doutDt,
                                           const void* gate, int gateDt, const void* up, int upDt, long long n, int act) {
  GRID_STRIDE(i, n) {
    const float d = ld(dout, doutDt, i);
    float value, slope;
    gatedActivation(ld(gate, gateDt, i), act, value, slope);
    st(dup, dupDt, i, d * value);
    st(dgate, dgateDt, i, d * ld(up, upDt, i) * slope);
  }
}

// x = cap * tanh(x / cap) in place (logit soft-capping).
extern "C" __global__ void softcap(void* x, int xDt, float cap, long long n) {
  GRID_STRIDE(i, n) st(x, xDt, i, cap * tanhf(ld(x, xDt, i) / cap));
}

extern "C" __global__ void add_bias(void* out, int outDt, const void* bias, int biasDt, long long rows, int cols) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  const float b = ld(bias, biasDt, j);
  for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
    const long long i = r * cols + j;
    st(out, outDt, i, __fadd_rn(ld(out, outDt, i), b));
  }
}

// Block (32, 8): threadIdx.x picks the column, threadIdx.y strides the block's rows. partials (gridDim.y, cols).
extern "C" __global__ void bias_backward_partials(float* partials, const void* dout, int doutDt, long long rows, int cols) {
  __shared__ float sums[8][33];
  const int j = blockIdx.x * 32 + threadIdx.x;
  float sum = 0.0f;
  if (j < cols)
    for (long long r = (long long)blockIdx.y * 8 + threadIdx.y; r < rows; r += (long long)gridDim.y * 8)
      sum += ld(dout, doutDt, r * cols + j);
  sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    for (int y = 1; y < 8; y++) sum += sums[y][threadIdx.x];
    partials[(long long)blockIdx.y * cols + j] = sum;
  }
}

// dbias (cols) += column sums of partials (parts, cols), in a fixed order.
extern "C" __global__ void bias_backward_reduce(void* dbias, int dbiasDt, const float* partials, int parts, int cols) {
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x) {
    double sum = 0.0;
    for (int p = 0; p < parts; p++) sum += partials[(long long)p * cols + j];
    st(dbias, dbiasDt, j, (float)((double)ld(dbias, dbiasDt, j) + sum));
  }
}
