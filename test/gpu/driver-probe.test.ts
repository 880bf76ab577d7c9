// Tests for the driver and library probes against stand-in libcuda/NVRTC/cuBLASLt/NCCL/cuDNN libraries
// compiled from C here, so koffi's marshalling (out pointers, strings, size_t) is checked without a GPU.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { formatDriverVersion, formatVersionCode, probeDriver, probeLibraryVersion } from "../../src/gpu/driver-probe.ts";

// A libcuda that answers like a driver with FAKE_DEVICES GPUs: device 0 an H200-like sm_90,
// device 1 a T4-like sm_75. With FAIL_SM_COUNT, the SM-count attribute of device 1 fails.
const FAKE_CUDA_C = `
#include <stdio.h>
#include <stddef.h>
typedef int CUresult;
static int inited = 0;
CUresult cuDriverGetVersion(int *v) { *v = 12080; return 0; }
CUresult cuInit(unsigned int flags) { if (flags != 0) return 1; if (FAKE_DEVICES == 0) return 100; inited = 1; return 0; }
CUresult cuDeviceGetCount(int *n) { if (!inited) return 3; *n = FAKE_DEVICES; return 0; }
CUresult cuDeviceGet(int *d, int ordinal) { if (ordinal < 0 || ordinal >= FAKE_DEVICES) return 101; *d = 40 + ordinal; return 0; }
CUresult cuDeviceGetName(char *name, int len, int dev) {
  snprintf(name, (size_t)len, "%s", dev == 40 ? "NVIDIA H200" : dev == 41 ? "Tesla T4" : "?"); return dev >= 40 ? 0 : 101;
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, int dev) { *bytes = dev == 40 ? (size_t)143771 * 1048576 : (size_t)15360 * 1048576; return 0; }
CUresult cuDeviceGetAttribute(int *pi, int attrib, int dev) {
  int h200 = dev == 40;
  if (attrib == 75) { *pi = h200 ? 9 : 7; return 0; }
  if (attrib == 76) { *pi = h200 ? 0 : 5; return 0; }
  if (attrib == 16) { if (FAIL_SM_COUNT && !h200) return 999; *pi = h200 ? 132 : 40; return 0; }
  return 1;
}
CUresult cuDeviceGetUuid_v2(unsigned char *u, int dev) { for (int i = 0; i < 16; i++) u[i] = (unsigned char)(i * 17 + dev - 40); return 0; }
/* Peer access from the H200 (40) to the T4 (41) only; rank 1 that way; atomics nowhere. */
CUresult cuDeviceGetP2PAttribute(int *v, int attrib, int src, int dst) {
  if (src == dst || src < 40 || dst < 40) return 1;
  if (attrib == 1) { *v = src == 40 ? 1 : 0; return 0; }
  if (attrib == 2) { *v = src == 40 ? 1 : 0; return 0; }
  if (attrib == 3) { *v = 0; return 0; }
  return 1;
}
CUresult cuGetErrorName(CUresult e, const char **s) {
  if (e == 100) { *s = "CUDA_ERROR_NO_DEVICE"; return 0; }
  if (e == 999) { *s = "CUDA_ERROR_UNKNOWN"; return 0; }
  *s = NULL; return 1;
}
CUresult cuGetErrorString(CUresult e, const char **s) {
  if (e == 100) { *s = "no CUDA-capable device is detected"; return 0; }
  if (e == 999) { *s = "unknown error"; return 0; }
  *s = NULL; return 1;
}
`;

// One library holding every version entry point, with the encodings of NVRTC 13.0, cuBLASLt 13.0.2,
// NCCL 2.28.3 and cuDNN 9.14.0; with NCCL_FAILS, ncclGetVersion returns ncclInternalError (3).
const FAKE_LIBS_C = `
#include <stddef.h>
int nvrtcVersion(int *major, int *minor) { *major = 13; *minor = 0; return 0; }
const char *nvrtcGetErrorString(int r) { return r == 0 ? "NVRTC_SUCCESS" : "NVRTC_ERROR"; }
size_t cublasLtGetVersion(void) { return 130002; }
int ncclGetVersion(int *v) { if (NCCL_FAILS) return 3; *v = 22803; return 0; }
const char *ncclGetErrorString(int r) { return r == 3 ? "internal error - please report this issue to the NCCL developers" : "?"; }
size_t cudnnGetVersion(void) { return 91400; }
`;

const hasCompiler = spawnSync("cc", ["--version"]).status === 0;
const skip = hasCompiler ? false : "no C compiler (cc) on this machine";
let workDir: string | undefined;

async function compile(name: string, source: string, defines: Record<string, number>): Promise<string> {
  workDir ??= await mkdtemp(join(os.tmpdir(), "tuna-driver-probe-"));
  const src = join(workDir, `${name}.c`);
  const lib = join(workDir, `${name}.so`);
  await writeFile(src, source);
  const flags = Object.entries(defines).map(([k, v]) => `-D${k}=${v}`);
  const result = spawnSync("cc", ["-shared", "-fPIC", "-o", lib, src, ...flags], { encoding: "utf8" });
  assert.equal(result.status, 0, result.stderr);
  return lib;
}

after(async () => {
  if (workDir !== undefined) await rm(workDir, { recursive: true, force: true });
});

void test("a driver without GPUs: cuInit's failure named and described, driver version still reported", { skip }, async () => {
  const lib = await compile("cuda-none", FAKE_CUDA_C, { FAKE_DEVICES: 0, FAIL_SM_COUNT: 0 });
  assert.deepEqual(probeDriver(lib), {
    ok: false,
    libraryPath: lib,
    error: "cuInit failed: CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)",
    driverVersion: 12080,
    driverVersionText: "12.8",
  });
});

void test("two GPUs: names, memory, compute capability, SM count and UUID read through out pointers", { skip }, async () => {
  const lib = await compile("cuda-two", FAKE_CUDA_C, { FAKE_DEVICES: 2, FAIL_SM_COUNT: 0 });
  const probe = probeDriver(lib);
  assert.equal(probe.ok, true);
  assert.ok(probe.ok);
  assert.equal(probe.driverVersion, 12080);
  assert.equal(probe.driverVersionText, "12.8");
  assert.deepEqual(probe.devices, [
    {
      index: 0,
      name: "NVIDIA H200",
      totalMemoryBytes: 150_754_820_096, // 143771 MiB
      computeCapability: { major: 9, minor: 0 },
      multiprocessorCount: 132,
      uuid: "GPU-00112233-4455-6677-8899-aabbccddeeff",
    },
    {
      index: 1,
      name: "Tesla T4",
      totalMemoryBytes: 16_106_127_360, // 15 GiB
      computeCapability: { major: 7, minor: 5 },
      multiprocessorCount: 40,
      uuid: "GPU-01122334-4556-6778-899a-abbccddeef00",
    },
  ]);
  // Peer-to-peer per ordered pair, read with the driver's device handles (not the ordinals).
  assert.deepEqual(probe.links, [
    { from: 0, to: 1, peerAccess: true, nativeAtomics: false, performanceRank: 1 },
    { from: 1, to: 0, peerAccess: false, nativeAtomics: false, performanceRank: 0 },
  ]);
});

void test("a failing device query names the call, the device and the driver's status string", { skip }, async () => {
  const lib = await compile("cuda-badattr", FAKE_CUDA_C, { FAKE_DEVICES: 2, FAIL_SM_COUNT: 1 });
  const probe = probeDriver(lib);
  assert.equal(probe.ok, false);
  assert.ok(!probe.ok);
  assert.equal(probe.error, "cuDeviceGetAttribute(MULTIPROCESSOR_COUNT, device 1) failed: CUDA_ERROR_UNKNOWN (unknown error)");
});

void test("a missing driver file and a library that is not the driver are results, not exceptions", { skip }, async () => {
  const missing = join(os.tmpdir(), "tuna-no-such-dir", "libcuda.so.1");
  const gone = probeDriver(missing);
  assert.equal(gone.ok, false);
  assert.ok(!gone.ok);
  assert.match(gone.error, /^could not load .*tuna-no-such-dir\/libcuda\.so\.1: /);

  const notCuda = await compile("not-cuda", FAKE_LIBS_C, { NCCL_FAILS: 0 });
  const wrong = probeDriver(notCuda);
  assert.ok(!wrong.ok);
  assert.match(wrong.error, /has no function cuGetErrorName/);
});

void test("library versions: NVRTC, cuBLASLt, NCCL and cuDNN decoded from their own encodings", { skip }, async () => {
  const lib = await compile("libs", FAKE_LIBS_C, { NCCL_FAILS: 0 });
  assert.deepEqual(probeLibraryVersion("nvrtc", lib), { ok: true, libraryPath: lib, version: "13.0" });
  assert.deepEqual(probeLibraryVersion("cublasLt", lib), { ok: true, libraryPath: lib, version: "13.0.2", versionCode: 130002 });
  assert.deepEqual(probeLibraryVersion("nccl", lib), { ok: true, libraryPath: lib, version: "2.28.3", versionCode: 22803 });
  assert.deepEqual(probeLibraryVersion("cudnn", lib), { ok: true, libraryPath: lib, version: "9.14.0", versionCode: 91400 });
});

void test("a library call that fails reports its status string; a missing library is a result", { skip }, async () => {
  const lib = await compile("libs-nccl-fails", FAKE_LIBS_C, { NCCL_FAILS: 1 });
  assert.deepEqual(probeLibraryVersion("nccl", lib), {
    ok: false,
    libraryPath: lib,
    error: "ncclGetVersion failed: status 3 (internal error - please report this issue to the NCCL developers)",
  });
  const missing = probeLibraryVersion("cudnn", "/nonexistent/libcudnn.so.9");
  assert.equal(missing.ok, false);
});

void test("version encodings: the driver's 1000*major+10*minor, and both library schemes", () => {
  assert.equal(formatDriverVersion(13000), "13.0");
  assert.equal(formatDriverVersion(12080), "12.8");
  assert.equal(formatDriverVersion(11040), "11.4");
  assert.equal(formatVersionCode(22803), "2.28.3"); // NCCL 2.28.3
  assert.equal(formatVersionCode(2804), "2.8.4"); // NCCL 2.8.4, before the 10000 scheme
  assert.equal(formatVersionCode(8907), "8.9.7"); // cuDNN 8.9.7
  assert.equal(formatVersionCode(91400), "9.14.0"); // cuDNN 9.14.0
});
