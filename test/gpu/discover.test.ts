// Tests for the CUDA library search: simulated file systems (the GPU machine's layout, wheels, WSL, overrides)
// and one real search of this machine.
import { test } from "node:test";
import assert from "node:assert/strict";
import { posix } from "node:path";
import { findCudaLibraries, librarySearchDirs, type LibrarySearchOptions } from "../../src/gpu/discover.ts";

/** A file system holding exactly `files` (and their parent directories); `dangling` are listed but do not exist. */
function fakeFs(files: string[], dangling: string[] = []): Required<Pick<LibrarySearchOptions, "exists" | "listDir">> {
  const children = new Map<string, Set<string>>();
  const existing = new Set<string>();
  for (const [file, real] of [...files.map((f) => [f, true] as const), ...dangling.map((f) => [f, false] as const)]) {
    if (real) existing.add(file);
    let path = file;
    while (path !== "/") {
      const parent = posix.dirname(path);
      const set = children.get(parent) ?? new Set<string>();
      set.add(posix.basename(path));
      children.set(parent, set);
      if (parent !== "/" && real) existing.add(parent);
      path = parent;
    }
  }
  return {
    exists: (p) => existing.has(p),
    listDir: (d) => [...(children.get(d) ?? [])],
  };
}

// The GPU machine of shared/device/README.md: CUDA 13.0 toolkit, driver 580.159 in /usr/lib,
// NCCL 2.28.3 and cuDNN 9.14 from apt, and torch's cu130 wheels in Python 3.12.
const TOOLKIT_LIBS = [
  "libcublas.so",
  "libcublas.so.13",
  "libcublas.so.13.0.2.14",
  "libcublasLt.so",
  "libcublasLt.so.13",
  "libcublasLt.so.13.0.2.14",
  "libnvrtc.so",
  "libnvrtc.so.13",
  "libnvrtc.so.13.0.88",
  "libnvrtc-builtins.so",
  "libnvrtc-builtins.so.13.0",
  "libnvrtc-builtins.so.13.0.88",
  "libcudart.so.13",
];
const GPU_MACHINE = [
  ...TOOLKIT_LIBS.map((f) => `/usr/local/cuda/lib64/${f}`),
  ...TOOLKIT_LIBS.map((f) => `/usr/local/cuda-13.0/lib64/${f}`),
  "/usr/local/cuda/include/cuda_bf16.h",
  "/usr/lib/libcuda.so.1",
  "/usr/lib/libcuda.so.580.159.03",
  "/usr/lib/x86_64-linux-gnu/libnccl.so.2",
  "/usr/lib/x86_64-linux-gnu/libnccl.so.2.28.3",
  "/usr/lib/x86_64-linux-gnu/libcudnn.so.9",
  "/usr/lib/x86_64-linux-gnu/libcudnn.so.9.14.0",
  "/usr/lib/x86_64-linux-gnu/libcudnn_ops.so.9",
  "/usr/lib/x86_64-linux-gnu/libc.so.6",
  "/usr/local/lib/python3.12/dist-packages/nvidia/cu13/lib/libnvrtc.so.13",
  "/usr/local/lib/python3.12/dist-packages/nvidia/cu13/lib/libcublasLt.so.13",
  "/usr/local/lib/python3.12/dist-packages/nvidia/nccl/lib/libnccl.so.2",
  "/usr/local/lib/python3.12/dist-packages/nvidia/cudnn/lib/libcudnn.so.9",
];

void test("the GPU machine's layout: each library from its documented place, version from the file name", () => {
  const result = findCudaLibraries({ env: {}, ...fakeFs(GPU_MACHINE) });
  assert.deepEqual(
    [result.cuda, result.nvrtc, result.nvrtcBuiltins, result.cublasLt, result.nccl, result.cudnn].map((r) => [r.found, r.path, r.version]),
    [
      [true, "/usr/lib/libcuda.so.1", "1"],
      [true, "/usr/local/cuda/lib64/libnvrtc.so.13", "13"],
      [true, "/usr/local/cuda/lib64/libnvrtc-builtins.so.13.0", "13.0"],
      [true, "/usr/local/cuda/lib64/libcublasLt.so.13", "13"],
      [true, "/usr/lib/x86_64-linux-gnu/libnccl.so.2", "2"],
      [true, "/usr/lib/x86_64-linux-gnu/libcudnn.so.9", "9"],
    ],
  );
  // libcuda sits in the 5th directory: cuda, cuda-13.0, x86_64-linux-gnu and lib64 come first.
  assert.deepEqual(result.cuda.searched, ["/usr/local/cuda/lib64", "/usr/local/cuda-13.0/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"]);
  assert.deepEqual(result.nvrtc.searched, ["/usr/local/cuda/lib64"]);
  // The wheel folders are on the search path, after the system directories.
  const wheelDirs = result.dirs.filter((d) => d.includes("dist-packages"));
  assert.deepEqual(wheelDirs, [
    "/usr/local/lib/python3.12/dist-packages/nvidia/cu13/lib",
    "/usr/local/lib/python3.12/dist-packages/nvidia/cudnn/lib",
    "/usr/local/lib/python3.12/dist-packages/nvidia/nccl/lib",
  ]);
  assert.ok(result.dirs.indexOf("/usr/lib/wsl/lib") < result.dirs.indexOf(wheelDirs[0] ?? ""));
});

void test("an empty file system finds nothing and reports every directory it searched", () => {
  const result = findCudaLibraries({ env: {}, exists: () => false, listDir: () => [] });
  for (const lib of [result.cuda, result.nvrtc, result.nvrtcBuiltins, result.cublasLt, result.nccl, result.cudnn]) {
    assert.equal(lib.found, false, lib.name);
    assert.equal(lib.path, undefined);
    assert.equal(lib.version, undefined);
    assert.deepEqual(lib.searched, result.dirs);
  }
  assert.deepEqual(result.dirs, [
    "/usr/local/cuda/lib64",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/lib/wsl/lib",
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
  ]);
});

void test("within a directory the highest version wins, numerically", () => {
  const fs = fakeFs(
    ["libnvrtc.so.11.2", "libnvrtc.so.12", "libnvrtc.so", "libcudnn.so.8", "libcudnn.so.9", "libcublasLt.so.11", "libcublasLt.so.12", "libnccl.so.2"].map(
      (f) => `/usr/lib/x86_64-linux-gnu/${f}`,
    ),
  );
  const result = findCudaLibraries({ env: {}, ...fs });
  assert.equal(result.nvrtc.path, "/usr/lib/x86_64-linux-gnu/libnvrtc.so.12");
  assert.equal(result.nvrtc.version, "12");
  assert.equal(result.cudnn.version, "9");
  assert.equal(result.cublasLt.version, "12");
  assert.equal(result.nccl.version, "2");
});

void test("only an unversioned libnvrtc.so: found, version unknown; libcuda.so.<driver> alone is not the driver API", () => {
  const fs = fakeFs(["/usr/lib64/libnvrtc.so", "/usr/lib64/libcuda.so.580.159.03", "/usr/lib64/libnvrtc.so.13.0.88"]);
  const result = findCudaLibraries({ env: {}, ...fs });
  assert.equal(result.nvrtc.path, "/usr/lib64/libnvrtc.so");
  assert.equal(result.nvrtc.version, undefined);
  assert.equal(result.cuda.found, false);
});

void test("toolkits under /usr/local/cuda-* are searched highest version first", () => {
  const fs = fakeFs([
    "/usr/local/cuda-12.4/lib64/libnvrtc.so.12",
    "/usr/local/cuda-12.10/lib64/libnvrtc.so.12",
    "/usr/local/cuda-13.0/lib64/libnvrtc.so.13",
    "/usr/local/cuda-11.8/lib64/libnvrtc.so.11.2",
  ]);
  const result = findCudaLibraries({ env: {}, ...fs });
  const toolkitDirs = result.dirs.filter((d) => d.startsWith("/usr/local/cuda-"));
  assert.deepEqual(toolkitDirs, ["/usr/local/cuda-13.0/lib64", "/usr/local/cuda-12.10/lib64", "/usr/local/cuda-12.4/lib64", "/usr/local/cuda-11.8/lib64"]);
  assert.equal(result.nvrtc.path, "/usr/local/cuda-13.0/lib64/libnvrtc.so.13");
});

void test("LD_LIBRARY_PATH is searched first and overrides a newer system copy; extraDirs come before it", () => {
  const files = [...GPU_MACHINE, "/opt/cuda12/lib/libnvrtc.so.12", "/opt/cuda12/lib/libnvrtc-builtins.so.12.8", "/srv/tuna-libs/libnccl.so.2"];
  const env = { LD_LIBRARY_PATH: "/opt/cuda12/lib::/srv/tuna-libs" };
  const result = findCudaLibraries({ env, ...fakeFs(files) });
  assert.equal(result.nvrtc.path, "/opt/cuda12/lib/libnvrtc.so.12");
  assert.deepEqual(result.nvrtc.searched, ["/opt/cuda12/lib"]);
  // The builtins must come from NVRTC's own directory, not the newer toolkit's.
  assert.equal(result.nvrtcBuiltins.path, "/opt/cuda12/lib/libnvrtc-builtins.so.12.8");
  assert.equal(result.nccl.path, "/srv/tuna-libs/libnccl.so.2");
  assert.deepEqual(result.dirs.slice(0, 3), ["/opt/cuda12/lib", "/srv/tuna-libs", "/usr/local/cuda/lib64"]);

  const withExtra = findCudaLibraries({ env, extraDirs: ["/usr/local/cuda-13.0/lib64"], ...fakeFs(files) });
  assert.equal(withExtra.nvrtc.path, "/usr/local/cuda-13.0/lib64/libnvrtc.so.13");
  assert.equal(withExtra.dirs.filter((d) => d === "/usr/local/cuda-13.0/lib64").length, 1, "directories are not repeated");
});

void test("CUDA_HOME and CUDA_PATH: lib64, lib and targets/x86_64-linux/lib", () => {
  const fs = fakeFs(["/opt/nv/cuda/targets/x86_64-linux/lib/libcublasLt.so.12", "/opt/other/lib/libnvrtc.so.12"]);
  const result = findCudaLibraries({ env: { CUDA_HOME: "/opt/nv/cuda/", CUDA_PATH: "/opt/other" }, ...fs });
  assert.equal(result.cublasLt.path, "/opt/nv/cuda/targets/x86_64-linux/lib/libcublasLt.so.12");
  assert.equal(result.nvrtc.path, "/opt/other/lib/libnvrtc.so.12");
  assert.deepEqual(result.dirs.slice(0, 6), [
    "/opt/nv/cuda/lib64",
    "/opt/nv/cuda/lib",
    "/opt/nv/cuda/targets/x86_64-linux/lib",
    "/opt/other/lib64",
    "/opt/other/lib",
    "/opt/other/targets/x86_64-linux/lib",
  ]);
});

void test("a pip-only machine: WSL libcuda and every library from nvidia-* wheels of a virtualenv", () => {
  const site = "/home/ana/venv/lib/python3.11/site-packages/nvidia";
  const fs = fakeFs([
    "/usr/lib/wsl/lib/libcuda.so.1",
    "/usr/lib/wsl/lib/libcuda.so",
    `${site}/cuda_nvrtc/lib/libnvrtc.so.12`,
    `${site}/cuda_nvrtc/lib/libnvrtc-builtins.so.12.4`,
    `${site}/cublas/lib/libcublasLt.so.12`,
    `${site}/cublas/lib/libcublas.so.12`,
    `${site}/nccl/lib/libnccl.so.2`,
    `${site}/cudnn/lib/libcudnn.so.9`,
    `${site}/cuda_runtime/lib/libcudart.so.12`,
    "/home/ana/.local/lib/python3.10/site-packages/nvidia/cudnn/lib/libcudnn.so.8",
  ]);
  const result = findCudaLibraries({ env: { VIRTUAL_ENV: "/home/ana/venv", HOME: "/home/ana" }, ...fs });
  assert.equal(result.cuda.path, "/usr/lib/wsl/lib/libcuda.so.1");
  assert.equal(result.nvrtc.path, `${site}/cuda_nvrtc/lib/libnvrtc.so.12`);
  assert.equal(result.nvrtcBuiltins.path, `${site}/cuda_nvrtc/lib/libnvrtc-builtins.so.12.4`);
  assert.equal(result.cublasLt.path, `${site}/cublas/lib/libcublasLt.so.12`);
  assert.equal(result.nccl.path, `${site}/nccl/lib/libnccl.so.2`);
  // The active virtualenv comes before ~/.local, so its cuDNN 9 wins over the user's cuDNN 8.
  assert.equal(result.cudnn.path, `${site}/cudnn/lib/libcudnn.so.9`);
  assert.ok(result.dirs.includes("/home/ana/.local/lib/python3.10/site-packages/nvidia/cudnn/lib"));
});

void test("site-packages found through python3 on PATH, and a conda environment's lib/", () => {
  const fs = fakeFs([
    "/opt/torch/.venv/bin/python3",
    "/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib/libnccl.so.2",
    "/opt/conda/envs/ft/lib/libcudnn.so.9",
  ]);
  const env = { PATH: "/opt/torch/.venv/bin:/usr/bin", CONDA_PREFIX: "/opt/conda/envs/ft" };
  const result = findCudaLibraries({ env, ...fs });
  assert.equal(result.nccl.path, "/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib/libnccl.so.2");
  assert.equal(result.cudnn.path, "/opt/conda/envs/ft/lib/libcudnn.so.9");
});

void test("a dangling link is passed over for the next candidate", () => {
  const fs = fakeFs(["/usr/lib64/libnvrtc.so.12", "/usr/lib/libnvrtc.so.13"], ["/usr/lib64/libnvrtc.so.13"]);
  const result = findCudaLibraries({ env: {}, ...fs });
  assert.equal(result.nvrtc.path, "/usr/lib64/libnvrtc.so.12");
});

void test("librarySearchDirs lists the same path findCudaLibraries searches", () => {
  const fs = fakeFs(GPU_MACHINE);
  assert.deepEqual(librarySearchDirs({ env: { LD_LIBRARY_PATH: "/x" }, ...fs }), findCudaLibraries({ env: { LD_LIBRARY_PATH: "/x" }, ...fs }).dirs);
});

void test("the real search of this machine never throws, and every path it reports is a real file", async () => {
  const { existsSync } = await import("node:fs");
  const result = findCudaLibraries();
  for (const lib of [result.cuda, result.nvrtc, result.nvrtcBuiltins, result.cublasLt, result.nccl, result.cudnn]) {
    if (lib.found) assert.ok(lib.path !== undefined && existsSync(lib.path), `${lib.name}: ${String(lib.path)}`);
    else assert.equal(lib.path, undefined);
  }
  assert.ok(result.dirs.includes("/usr/lib/x86_64-linux-gnu"));
});
