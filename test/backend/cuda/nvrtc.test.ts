// Tests for NVRTC's surroundings that need no library: the compile options, the architecture check and where
// the CUDA headers are looked for (with an injected file system).
import { test } from "node:test";
import assert from "node:assert/strict";
import { checkArchSupported, cudaIncludeCandidates, findCudaIncludeDir, gpuArch, nvrtcOptions } from "../../../src/backend/cuda/nvrtc.ts";
import { isTunaError } from "../../../src/util/errors.ts";

void test("kernels compile for the GPU's own arch, C++17, with the kernels and CUDA include folders, and no fast-math", () => {
  const options = nvrtcOptions({ arch: gpuArch({ major: 9, minor: 0 }), kernelsDir: "/tuna/kernels", cudaIncludeDir: "/usr/local/cuda/include" });
  assert.deepEqual(options, ["--gpu-architecture=sm_90", "-std=c++17", "-I/tuna/kernels", "-I/usr/local/cuda/include"]);
  assert.ok(!options.some((o) => o.includes("fast-math") || o.includes("use_fast_math")));
  assert.equal(gpuArch({ major: 8, minor: 6 }), "sm_86");
});

void test("an arch NVRTC cannot target names the GPU, its arch and what NVRTC supports", () => {
  const nvrtc = { version: "12.0", path: "/opt/nvrtc.so.12", supportedArchs: [50, 60, 70, 75, 80, 86, 89, 90] };
  checkArchSupported(nvrtc, "NVIDIA H200", { major: 9, minor: 0 });
  assert.throws(
    () => { checkArchSupported(nvrtc, "NVIDIA B200", { major: 10, minor: 0 }); },
    (e) =>
      isTunaError(e) &&
      e.code === "GPU" &&
      e.message.includes("NVIDIA B200 (sm_100)") &&
      e.message.includes("NVRTC 12.0") &&
      e.message.includes("sm_75, sm_80, sm_86, sm_89, sm_90"),
  );
});

void test("CUDA headers: CUDA_HOME, CUDA_PATH, beside NVRTC, the cuda_runtime wheel, then /usr/local/cuda", () => {
  const env = { CUDA_HOME: "/opt/cuda-home", CUDA_PATH: "/opt/cuda-path" };
  assert.deepEqual(cudaIncludeCandidates({ env, nvrtcPath: "/venv/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12" }), [
    "/opt/cuda-home/include",
    "/opt/cuda-path/include",
    "/venv/site-packages/nvidia/cuda_nvrtc/include",
    "/venv/site-packages/nvidia/cuda_runtime/include",
    "/usr/local/cuda/include",
  ]);
  assert.deepEqual(cudaIncludeCandidates({ env: {} }), ["/usr/local/cuda/include"]);

  const files = new Set(["/venv/site-packages/nvidia/cuda_runtime/include/cuda_bf16.h", "/usr/local/cuda/include/cuda_bf16.h"]);
  const exists = (p: string): boolean => files.has(p);
  // An include folder without cuda_bf16.h (NVRTC's wheel has only nvrtc.h) is passed over.
  assert.equal(
    findCudaIncludeDir({ env, nvrtcPath: "/venv/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12", exists }),
    "/venv/site-packages/nvidia/cuda_runtime/include",
  );
  assert.equal(findCudaIncludeDir({ env: { CUDA_HOME: "/opt/cuda-home" }, exists }), "/usr/local/cuda/include");
});

void test("no CUDA headers anywhere: a GPU error saying where it looked and to install them or set CUDA_HOME", () => {
  assert.throws(
    () => findCudaIncludeDir({ env: { CUDA_HOME: "/opt/cuda" }, nvrtcPath: "/usr/lib/x86_64-linux-gnu/libnvrtc.so.12", exists: () => false }),
    (e) =>
      isTunaError(e) &&
      e.code === "GPU" &&
      e.message.includes("cuda_bf16.h") &&
      e.message.includes("/opt/cuda/include, /usr/lib/include, /usr/local/cuda/include") &&
      e.message.includes("set CUDA_HOME"),
  );
});
