// Stand-in libcuda, NVRTC and cuBLASLt written in C, built here with the system's cc, so the CUDA runtime's koffi
// marshalling (out pointers, kernelParams, host buffers, uint64 addresses, 96-byte heuristic results) runs without a GPU.
// "Device" memory is host memory; kernels and GEMMs are computed on the CPU by the stand-ins.
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";

// libcuda: one "Fake H200" (sm_90, 132 SMs, 64 MiB). Kernels: fill(float* out, int n, float v);
// echo(void* out, int, unsigned, long long, unsigned long long, float, void*) writes its arguments and launch shape;
// fault() makes every later call fail as after an illegal address. fakeCudaState(i) reports counters.
const FAKE_CUDA = String.raw`
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef int CUresult;
typedef unsigned long long CUdeviceptr;
#define CAPACITY (64ull << 20)
static int retained, current, sticky, liveEvents, liveModules, sharedAttr;
static size_t used;
static CUdeviceptr ptrs[4096]; static size_t sizes[4096]; static int nblocks;
int fakeCudaState(int what) {
  switch (what) { case 0: return retained; case 1: return liveEvents; case 2: return (int)(used >> 10); case 3: return nblocks;
    case 4: return liveModules; case 5: return sharedAttr; case 6: return current; default: return -1; }
}
void fakeCudaClearFault(void) { sticky = 0; }
CUresult cuGetErrorName(CUresult e, const char **s) {
  switch (e) { case 1: *s = "CUDA_ERROR_INVALID_VALUE"; return 0; case 2: *s = "CUDA_ERROR_OUT_OF_MEMORY"; return 0;
    case 200: *s = "CUDA_ERROR_INVALID_IMAGE"; return 0; case 500: *s = "CUDA_ERROR_NOT_FOUND"; return 0;
    case 700: *s = "CUDA_ERROR_ILLEGAL_ADDRESS"; return 0; default: *s = NULL; return 1; }
}
CUresult cuGetErrorString(CUresult e, const char **s) {
  switch (e) { case 2: *s = "out of memory"; return 0; case 700: *s = "an illegal memory access was encountered"; return 0;
    default: *s = NULL; return 1; }
}
CUresult cuInit(unsigned int flags) { return flags == 0 ? 0 : 1; }
CUresult cuDeviceGetCount(int *n) { *n = 1; return 0; }
CUresult cuDeviceGet(int *d, int ordinal) { if (ordinal != 0) return 101; *d = 0; return 0; }
CUresult cuDeviceGetName(char *name, int len, int dev) { snprintf(name, (size_t)len, "Fake H200"); return 0; }
CUresult cuDeviceTotalMem_v2(size_t *bytes, int dev) { *bytes = CAPACITY; return 0; }
CUresult cuDeviceGetAttribute(int *v, int attrib, int dev) {
  if (attrib == 75) *v = 9; else if (attrib == 76) *v = 0; else if (attrib == 16) *v = 132; else return 1;
  return 0;
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) { retained++; *ctx = (void *)0xc0; return 0; }
CUresult cuDevicePrimaryCtxRelease_v2(int dev) { retained--; return 0; }
CUresult cuCtxSetCurrent(void *ctx) { current = ctx == (void *)0xc0; return 0; }
CUresult cuCtxSynchronize(void) { return sticky; }
CUresult cuStreamQuery(void *stream) { return sticky; }
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
  if (sticky) return sticky;
  if (used + n > CAPACITY) return 2;
  void *m = malloc(n); if (!m) return 2;
  ptrs[nblocks] = (CUdeviceptr)m; sizes[nblocks++] = n; used += n; *p = (CUdeviceptr)m; return 0;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
  for (int i = 0; i < nblocks; i++) if (ptrs[i] == p) {
    free((void *)p); used -= sizes[i]; ptrs[i] = ptrs[nblocks - 1]; sizes[i] = sizes[nblocks - 1]; nblocks--; return 0;
  }
  return 1;
}
CUresult cuMemGetInfo_v2(size_t *free_, size_t *total) { *free_ = CAPACITY - used; *total = CAPACITY; return 0; }
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *s, size_t n) { if (sticky) return sticky; memcpy((void *)d, s, n); return 0; }
CUresult cuMemcpyDtoH_v2(void *d, CUdeviceptr s, size_t n) { if (sticky) return sticky; memcpy(d, (void *)s, n); return 0; }
CUresult cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, size_t n) { memmove((void *)d, (void *)s, n); return 0; }
CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) { memset((void *)d, v, n); return 0; }
CUresult cuModuleLoadData(void **m, const void *image) {
  if (memcmp(image, "FAKECUBIN", 9) != 0) return 200;
  liveModules++; *m = (void *)0x400; return 0;
}
CUresult cuModuleUnload(void *m) { liveModules--; return 0; }
CUresult cuModuleGetFunction(void **f, void *m, const char *name) {
  if (!strcmp(name, "fill")) *f = (void *)1; else if (!strcmp(name, "echo")) *f = (void *)2;
  else if (!strcmp(name, "fault")) *f = (void *)3; else return 500;
  return 0;
}
CUresult cuFuncSetAttribute(void *f, int attrib, int value) { if (attrib != 8) return 1; sharedAttr = value; return 0; }
struct Echo { int32_t i32; uint32_t u32; int64_t i64; uint64_t u64; float f32; uint64_t ptr; uint32_t shape[7]; };
CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void *stream, void **params, void **extra) {
  if (sticky) return sticky;
  if (stream || extra || !params || !gx || !gy || !gz || !bx || !by || !bz) return 1;
  if (f == (void *)1) {
    float *out = *(float **)params[0]; int n = *(int *)params[1]; float v = *(float *)params[2];
    for (int i = 0; i < n; i++) out[i] = v;
  } else if (f == (void *)2) {
    struct Echo *e = *(struct Echo **)params[0];
    e->i32 = *(int32_t *)params[1]; e->u32 = *(uint32_t *)params[2]; e->i64 = *(int64_t *)params[3];
    e->u64 = *(uint64_t *)params[4]; e->f32 = *(float *)params[5]; e->ptr = *(uint64_t *)params[6];
    unsigned s[7] = { gx, gy, gz, bx, by, bz, shared }; memcpy(e->shape, s, sizeof s);
  } else if (f == (void *)3) {
    sticky = 700;
  } else return 1;
  return 0;
}
CUresult cuEventCreate(void **e, unsigned flags) { if (flags & ~2u) return 1; liveEvents++; *e = (void *)(uintptr_t)(0xe0 + liveEvents); return 0; }
/* Streams other than the default one: only non-blocking ones (flag 1), as the NCCL collective creates. */
static int liveStreams;
CUresult cuStreamCreate(void **s, unsigned flags) { if (flags != 1) return 1; liveStreams++; *s = (void *)(uintptr_t)(0x5000 + liveStreams); return 0; }
CUresult cuStreamDestroy_v2(void *s) { if ((uintptr_t)s <= 0x5000) return 1; liveStreams--; return 0; }
CUresult cuStreamWaitEvent(void *s, void *e, unsigned flags) { return flags ? 1 : sticky; }
CUresult cuEventQuery(void *e) { return sticky; }
int fakeCudaStreams(void) { return liveStreams; }
CUresult cuEventRecord(void *e, void *stream) { return stream == 0 || (uintptr_t)stream > 0x5000 ? 0 : 1; }
CUresult cuEventSynchronize(void *e) { return sticky; }
CUresult cuEventElapsedTime_v2(float *ms, void *a, void *b) { *ms = 2.5f; return 0; }
CUresult cuEventDestroy_v2(void *e) { liveEvents--; return 0; }
`;

// NVRTC 13.0 for sm_75..sm_100. A source containing "#error" fails with a log; otherwise the "cubin" is
// FAKECUBIN, the options one per line, then the source.
const FAKE_NVRTC = String.raw`
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef struct { char *src, *name, *log, *cubin; size_t cubinSize; } Prog;
static int livePrograms, compiles;
int fakeNvrtcState(int what) { return what == 0 ? livePrograms : compiles; }
const char *nvrtcGetErrorString(int r) { return r == 0 ? "NVRTC_SUCCESS" : r == 6 ? "NVRTC_ERROR_COMPILATION" : "NVRTC_ERROR_OTHER"; }
int nvrtcVersion(int *major, int *minor) { *major = 13; *minor = 0; return 0; }
int nvrtcGetNumSupportedArchs(int *n) { *n = 5; return 0; }
int nvrtcGetSupportedArchs(int *a) { int v[] = { 75, 80, 86, 90, 100 }; memcpy(a, v, sizeof v); return 0; }
int nvrtcCreateProgram(Prog **p, const char *src, const char *name, int numHeaders, const char **h, const char **n) {
  if (numHeaders != 0 || h || n) return 1;
  Prog *q = calloc(1, sizeof *q); q->src = strdup(src); q->name = strdup(name); q->log = strdup(""); *p = q; livePrograms++;
  return 0;
}
int nvrtcCompileProgram(Prog *p, int n, const char **options) {
  compiles++;
  if (strstr(p->src, "#error")) {
    free(p->log); p->log = malloc(strlen(p->name) * 2 + 128);
    sprintf(p->log, "%s(1): error: #error directive: broken\n\n1 error detected in the compilation of \"%s\".\n", p->name, p->name);
    return 6;
  }
  size_t size = 10 + strlen(p->src);
  for (int i = 0; i < n; i++) size += strlen(options[i]) + 1;
  p->cubin = malloc(size + 1); strcpy(p->cubin, "FAKECUBIN\n");
  for (int i = 0; i < n; i++) { strcat(p->cubin, options[i]); strcat(p->cubin, "\n"); }
  strcat(p->cubin, p->src); p->cubinSize = size;
  return 0;
}
int nvrtcGetProgramLogSize(Prog *p, size_t *n) { *n = strlen(p->log) + 1; return 0; }
int nvrtcGetProgramLog(Prog *p, char *log) { strcpy(log, p->log); return 0; }
int nvrtcGetCUBINSize(Prog *p, size_t *n) { if (!p->cubin) return 1; *n = p->cubinSize; return 0; }
int nvrtcGetCUBIN(Prog *p, char *c) { memcpy(c, p->cubin, p->cubinSize); return 0; }
int nvrtcDestroyProgram(Prog **p) {
  if (!p || !*p) return 1;
  free((*p)->src); free((*p)->name); free((*p)->log); free((*p)->cubin); free(*p); *p = NULL; livePrograms--; return 0;
}
`;

// cuBLASLt: checks what it is given (compute type 32F, scale 32F, layouts that agree with the ops, a 96-byte
// heuristic result passed back as the algo, the workspace) and computes the column-major GEMM for f32 and bf16.
const FAKE_CUBLASLT = String.raw`
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
typedef struct { int transa, transb; } Desc;
typedef struct { int type; uint64_t rows, cols; int64_t ld; } Layout;
typedef struct { uint64_t maxWorkspace; uint32_t align[4]; } Pref;
static int liveObjects, matmuls, heuristics;
int fakeBlasState(int what) { return what == 0 ? liveObjects : what == 1 ? matmuls : heuristics; }
const char *cublasLtGetStatusString(int s) { return s == 7 ? "CUBLAS_STATUS_INVALID_VALUE" : s == 15 ? "CUBLAS_STATUS_NOT_SUPPORTED" : "CUBLAS_STATUS_?"; }
int cublasLtCreate(void **h) { liveObjects++; *h = (void *)0x1b; return 0; }
int cublasLtDestroy(void *h) { liveObjects--; return h == (void *)0x1b ? 0 : 7; }
int cublasLtMatmulDescCreate(Desc **d, int compute, int scale) {
  if (compute != 68 || scale != 0) return 7;
  *d = calloc(1, sizeof(Desc)); liveObjects++; return 0;
}
int cublasLtMatmulDescSetAttribute(Desc *d, int attr, const void *buf, size_t n) {
  if (n != 4) return 7;
  if (attr == 3) d->transa = *(const int *)buf; else if (attr == 4) d->transb = *(const int *)buf; else return 7;
  return 0;
}
int cublasLtMatmulDescDestroy(Desc *d) { free(d); liveObjects--; return 0; }
int cublasLtMatrixLayoutCreate(Layout **l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
  if (ld < (int64_t)rows) return 7;
  Layout *x = malloc(sizeof *x); x->type = type; x->rows = rows; x->cols = cols; x->ld = ld; *l = x; liveObjects++; return 0;
}
int cublasLtMatrixLayoutDestroy(Layout *l) { free(l); liveObjects--; return 0; }
int cublasLtMatmulPreferenceCreate(Pref **p) { *p = calloc(1, sizeof(Pref)); liveObjects++; return 0; }
int cublasLtMatmulPreferenceSetAttribute(Pref *p, int attr, const void *buf, size_t n) {
  if (attr == 1 && n == 8) { p->maxWorkspace = *(const uint64_t *)buf; return 0; }
  if (attr >= 5 && attr <= 8 && n == 4) { p->align[attr - 5] = *(const uint32_t *)buf; return 0; }
  return 7;
}
int cublasLtMatmulPreferenceDestroy(Pref *p) { free(p); liveObjects--; return 0; }
int cublasLtMatmulAlgoGetHeuristic(void *h, Desc *d, Layout *a, Layout *b, Layout *c, Layout *dd, Pref *p, int req,
                                   unsigned char *results, int *count) {
  heuristics++;
  if (req < 1 || p->maxWorkspace < (32u << 20) || c != dd) return 7;
  for (int i = 0; i < 4; i++) if (p->align[i] == 0 || (p->align[i] & (p->align[i] - 1))) return 7;
  memset(results, 0, 96 * (size_t)req);
  uint64_t magic = 0xa160a160a160a160ull, workspace = 1u << 20;
  memcpy(results, &magic, 8); memcpy(results + 64, &workspace, 8);
  *count = 1; return 0;
}
static float load(int type, uint64_t base, uint64_t i) {
  if (type == 0) return ((const float *)base)[i];
  uint32_t bits = (uint32_t)((const uint16_t *)base)[i] << 16; float f; memcpy(&f, &bits, 4); return f;
}
static void store(int type, uint64_t base, uint64_t i, float v) {
  if (type == 0) { ((float *)base)[i] = v; return; }
  uint32_t bits; memcpy(&bits, &v, 4); bits += 0x7fff + ((bits >> 16) & 1); ((uint16_t *)base)[i] = (uint16_t)(bits >> 16);
}
int cublasLtMatmul(void *h, Desc *d, const float *alpha, uint64_t A, Layout *la, uint64_t B, Layout *lb, const float *beta,
                   uint64_t C, Layout *lc, uint64_t D, Layout *ld, const void *algo, uint64_t ws, size_t wsSize, void *stream) {
  uint64_t magic; memcpy(&magic, algo, 8);
  if (magic != 0xa160a160a160a160ull || stream || !ws || wsSize < (1u << 20) || C != D || lc != ld) return 7;
  if (la->type != lb->type || (la->type != 0 && la->type != 14) || (ld->type != 0 && ld->type != 14)) return 15;
  uint64_t m = ld->rows, n = ld->cols, k = d->transa ? la->rows : la->cols;
  if ((d->transa ? la->cols : la->rows) != m || (d->transb ? lb->cols : lb->rows) != k || (d->transb ? lb->rows : lb->cols) != n) return 7;
  for (uint64_t i = 0; i < m; i++) for (uint64_t j = 0; j < n; j++) {
    float sum = 0;
    for (uint64_t l = 0; l < k; l++) {
      float x = load(la->type, A, d->transa ? l + i * la->ld : i + l * la->ld);
      float y = load(lb->type, B, d->transb ? j + l * lb->ld : l + j * lb->ld);
      sum += x * y;
    }
    uint64_t at = i + j * ld->ld;
    store(ld->type, D, at, *alpha * sum + (*beta != 0 ? *beta * load(ld->type, D, at) : 0));
  }
  matmuls++;
  return 0;
}
`;

export interface FakeCuda {
  dir: string;
  cudaPath: string;
  nvrtcPath: string;
  cublasLtPath: string;
  kernelsDir: string;
  cacheDir: string;
}

export const hasCompiler = spawnSync("cc", ["--version"]).status === 0;

/** Builds the three libraries into a new temporary folder laid out like a toolkit (lib + include). */
export async function buildFakeCuda(): Promise<FakeCuda> {
  const dir = await mkdtemp(join(os.tmpdir(), "tuna-fake-cuda-"));
  const build = async (source: string, file: string): Promise<string> => {
    const src = join(dir, `${file}.c`);
    const lib = join(dir, "lib", file);
    await writeFile(src, source);
    const result = spawnSync("cc", ["-shared", "-fPIC", "-O1", "-o", lib, src], { encoding: "utf8" });
    if (result.status !== 0) throw new Error(`cc failed for ${file}: ${result.stderr}`);
    return lib;
  };
  await mkdir(join(dir, "lib"));
  await mkdir(join(dir, "include"));
  await writeFile(join(dir, "include", "cuda_bf16.h"), "// stand-in\n");
  const kernelsDir = join(dir, "kernels");
  await mkdir(kernelsDir);
  await writeFile(join(kernelsDir, "common.cuh"), "#pragma once\n");
  await writeFile(join(kernelsDir, "fill.cu"), '#include "common.cuh"\nextern "C" __global__ void fill(float* out, int n, float v) {}\n');
  return {
    dir,
    cudaPath: await build(FAKE_CUDA, "libcuda.so.1"),
    nvrtcPath: await build(FAKE_NVRTC, "libnvrtc.so.13"),
    cublasLtPath: await build(FAKE_CUBLASLT, "libcublasLt.so.13"),
    kernelsDir,
    cacheDir: join(dir, "cache"),
  };
}
