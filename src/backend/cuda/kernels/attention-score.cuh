// The attention score every attention kernel computes (attention.cu, attention-mma*.cu, attention-decode.cu).
#pragma once
// An attention score in log2 units (dot * scaleLog2), soft-capped when cap > 0 (Gemma 2's attn_logit_softcapping):
// cap * tanh(s / cap) on the natural-log score s, back in log2 units. `slope` is d(capped)/d(s): 1 - tanh^2, or 1.
__device__ __forceinline__ float attnScoreLog2(float dot, float scaleLog2, float cap, float& slope) {
  const float s = dot * scaleLog2;
  if (cap <= 0.0f) {
    slope = 1.0f;
    return s;
  }
  const float t = tanhf(s * 0.69314718055994530942f / cap);
  slope = 1.0f - t * t;
  return cap * t * 1.44269504088896340736f;
}
