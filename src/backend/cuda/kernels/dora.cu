// DoRA (weight-decomposed LoRA) as PEFT's DoraLinearLayer computes it, g = magnitude / norms per column:
// row_norms: the L2 norm of each row of the adapted weight W + s * B A (one block per row, f32 sums by
// blockSum, sqrt in double, rounded once). dora_forward: y += (g - 1) * base + g * lora (2D grid as
// add_bias: x covers columns, y strides rows; y may be exactly base). dora_backward_partials: dlora = g * dy,
// dbase = (g - 1) * dy (optional) and per-block f32 column sums of dy * (base + lora) into a scratch
// (gridDim.y, cols), deterministic as bias_backward_partials; dora_magnitude_reduce sums them per column
// in a fixed order (double), divides by the norm and adds once into dmagnitude.
#include "common.cuh"

extern "C" __global__ void row_norms(void* norms, int normsDt, const void* x, int xDt, long long rows, int cols) {
  __shared__ float scratch[32];
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    const long long base = r * cols;
    float sum = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
      const float v = ld(x, xDt, base + j);
      sum = fmaf(v, v, sum);
    }
    sum = blockSum(sum, scratch);
    if (threadIdx.x == 0) st(norms, normsDt, r, (float)sqrt((double)sum));
  }
}

__device__ __forceinline__ float columnScale(const void* magnitude, int magnitudeDt, const void* norms, int normsDt, int j) {
  return ld(magnitude, magnitudeDt, j) / ld(norms, normsDt, j);
}

extern "C" __global__ void dora_forward(void* y, int yDt, const void* base, int baseDt, const void* lora, int loraDt,
                                        const void* magnitude, int magnitudeDt, const void* norms, int normsDt,
                                        long long rows, int cols) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  const float g = columnScale(magnitude, magnitudeDt, norms, normsDt, j);
  for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
    const long long i = r * cols + j;
    const float b = ld(base, baseDt, i);
    const float l = ld(lora, loraDt, i);
    st(y, yDt, i, ld(y, yDt, i) + fmaf(g - 1.0f, b, g * l));
  }
}

// Block (32, 8): threadIdx.x picks the column, threadIdx.y strides the block's rows. dbase may be null.
extern "C" __global__ void dora_backward_partials(float* partials, void* dlora, int dloraDt, void* dbase, int dbaseDt,
                                                  const void* dy, int dyDt, const void* base, int baseDt,
                                                  const void* lora, int loraDt, const void* magnitude, int magnitudeDt,
                                                  const void* norms, int normsDt, long long rows, int cols) {
  __shared__ float sums[8][33];
  const int j = blockIdx.x * 32 + threadIdx.x;
  float sum = 0.0f;
  if (j < cols) {
    const float g = columnScale(magnitude, magnitudeDt, norms, normsDt, j);
    for (long long r = (long long)blockIdx.y * 8 + threadIdx.y; r < rows; r += (long long)gridDim.y * 8) {
      const long long i = r * cols + j;
      const float d = ld(dy, dyDt, i);
      const float b = ld(base, baseDt, i);
      const float l = ld(lora, loraDt, i);
      sum = fmaf(d, b + l, sum);
      st(dlora, dloraDt, i, g * d);
      if (dbase != nullptr) st(dbase, dbaseDt, i, (g - 1.0f) * d);
    }
  }
  sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    for (int y = 1; y < 8; y++) sum += sums[y][threadIdx.x];
    partials[(long long)blockIdx.y * cols + j] = sum;
  }
}

extern "C" __global__ void dora_magnitude_reduce(void* dmagnitude, int dmagnitudeDt, const float* partials,
                                                 const void* norms, int normsDt, int parts, int cols) {
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x) {
    double sum = 0.0;
    for (int p = 0; p < parts; p++) sum += partials[(long long)p * cols + j];
    st(dmagnitude, dmagnitudeDt, j, (float)((double)ld(dmagnitude, dmagnitudeDt, j) + sum / (double)ld(norms, normsDt, j)));
  }
}
