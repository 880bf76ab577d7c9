// Token embedding: the forward gathers table rows (V, C) by id into out (N, C); the backward scatter-adds
// dout rows (N, C) into an f32 dtable (V, C) with atomicAdd (duplicate ids meet in the atomics).
// Memory plan: one block per token row (grid-strided over N), threads stride over C so each row's read
// and write are coalesced; no shared memory. An id outside [0, V) cannot be reported from the device:
// the forward writes a NaN row for it (so the loss shows it), the backward skips it as it skips id < 0.
#include "common.cuh"

extern "C" __global__ void embedding_forward(void* out, int outDt, const int* ids, const void* table, int tableDt,
                                             long long tokens, int vocab, int channels) {
  for (long long n = blockIdx.x; n < tokens; n += gridDim.x) {
    const int id = ids[n];
    const long long outBase = n * channels;
    if (id < 0 || id >= vocab) {
      for (int c = threadIdx.x; c < channels; c += blockDim.x) st(out, outDt, outBase + c, TUNA_NAN);
      continue;
    }
    const long long tableBase = (long long)id * channels;
    for (int c = threadIdx.x; c < channels; c += blockDim.x) st(out, outDt, outBase + c, ld(table, tableDt, tableBase + c));
  }
}

extern "C" __global__ void embedding_backward(float* dtable, const void* dout, int doutDt, const int* ids,
                                              long long tokens, int vocab, int channels) {
  for (long long n = blockIdx.x; n < tokens; n += gridDim.x) {
    const int id = ids[n];
    if (id < 0 || id >= vocab) continue;
    const long long rowBase = n * channels;
    const long long tableBase = (long long)id * channels;
    for (int c = threadIdx.x; c < channels; c += blockDim.x) atomicAdd(dtable + tableBase + c, ld(dout, doutDt, rowBase + c));
  }
}
