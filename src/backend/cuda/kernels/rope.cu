// Rotary embedding in place on x (N, heads, D), half-split pairing (j with j + D/2) as HF's rotate_half;
// direction +1 rotates (forward), -1 rotates back (the backward is the transpose of the rotation).
// Numerics follow the CPU reference: angle = f32(f32(position) * invFreq[j]); cos and sin of that f32 angle
// are taken in double and rounded to f32; the rotated pair is computed in double from those and rounded
// once. CUDA's double sin/cos are within 2 ulp of double, so the f32 cos/sin equal the reference's
// correctly rounded values except when the true value lies within ~2^-52 (relative) of an f32 rounding
// boundary.
// Memory plan: one thread per (token, j < D/2), grid-stride; it computes its cos/sin once and applies them to
// every head, so consecutive threads touch consecutive j of the same head row (coalesced). No shared memory.
#include "common.cuh"

extern "C" __global__ void rope_rotate(void* x, int xDt, const int* positions, const float* invFreq, long long tokens,
                                       int heads, int dim, float direction) {
  const int half = dim / 2;
  const long long pairs = tokens * half;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < pairs; i += (long long)gridDim.x * blockDim.x) {
    const long long t = i / half;
    const int j = (int)(i - t * half);
    const float angle = __fmul_rn((float)positions[t], invFreq[j]);
    double sinA, cosA;
    sincos((double)angle, &sinA, &cosA);
    const double c = (double)(float)cosA;
    const double s = (double)direction * (double)(float)sinA;
    for (int h = 0; h < heads; h++) {
      const long long base = (t * heads + h) * dim;
      const double x1 = ld(x, xDt, base + j);
      const double x2 = ld(x, xDt, base + half + j);
      st(x, xDt, base + j, (float)(x1 * c - x2 * s));
      st(x, xDt, base + half + j, (float)(x2 * c + x1 * s));
    }
  }
}
