// Tests for `tuna doctor`: the real run on this machine (no GPU: a CPU-only verdict, exit 0, valid JSON)
// and verdicts for GPU machines described by stand-in probes.
import { test } from "node:test";
import assert from "node:assert/strict";
import os from "node:os";
import { doctorCommand, type DoctorProbes, type DoctorReport } from "../../src/cli/commands/doctor.ts";
import { memoryOutput } from "../../src/cli/output.ts";
import { findCudaLibraries, type LibraryResult, type LibrarySearchResult } from "../../src/gpu/discover.ts";
import type { GpuInfo, GpuLink } from "../../src/gpu/driver-probe.ts";

const CPU_ONLY = "verdict: CPU only — no NVIDIA driver (libcuda) found; tuna will train on the CPU backend (slow; fine for tiny models and tests).";
const thisMachineHasDriver = findCudaLibraries().cuda.found;

void test("this machine: prints system facts and, without libcuda, the CPU-only verdict; exit 0", async () => {
  const out = memoryOutput();
  assert.equal(await doctorCommand([], out), 0);
  const text = out.stdout.join("\n");
  assert.match(text, new RegExp(`node +${process.version.replace(/\./g, "\\.")} \\(ok: tuna needs >= 20\\)`));
  assert.match(text, new RegExp(`platform +${process.platform} ${process.arch}`));
  assert.ok(text.includes(`, ${os.cpus().length} cores`));
  assert.ok(text.includes(`${Math.round((os.totalmem() / 2 ** 30) * 10) / 10} GiB`));
  for (const lib of ["NVRTC", "cuBLASLt", "NCCL", "cuDNN"]) assert.match(text, new RegExp(`^  ${lib} `, "m"));
  if (!thisMachineHasDriver) {
    assert.match(text, /libcuda +not found/);
    assert.ok(text.trimEnd().endsWith(CPU_ONLY), text);
  } else {
    assert.match(text, /^verdict: /m);
  }
  assert.deepEqual(out.stderr, []);
});

void test("this machine with --json: one JSON object with the same facts", async () => {
  const out = memoryOutput();
  assert.equal(await doctorCommand(["--json"], out), 0);
  assert.equal(out.stdout.length, 1);
  const report = JSON.parse(out.stdout[0] ?? "") as DoctorReport;
  assert.equal(report.node.version, process.version);
  assert.equal(report.node.ok, Number(process.versions.node.split(".")[0]) >= 20);
  assert.equal(report.platform.arch, process.arch);
  assert.equal(report.cpu.cores, os.cpus().length);
  assert.equal(report.memory.totalBytes, os.totalmem());
  assert.ok(report.gpu.searchPath.includes("/usr/local/cuda/lib64"));
  assert.deepEqual(Object.keys(report.gpu.libraries).sort(), ["cublasLt", "cudnn", "nccl", "nvrtc", "nvrtcBuiltins"]);
  if (!thisMachineHasDriver) {
    assert.equal(report.gpu.libcuda.found, false);
    assert.equal(report.verdict.status, "cpu-only");
    assert.equal(`verdict: ${report.verdict.text}`, CPU_ONLY);
  }
});

void test("arguments: --help exits 0, an unknown flag exits 2 with usage on stderr", async () => {
  const help = memoryOutput();
  assert.equal(await doctorCommand(["--help"], help), 0);
  assert.match(help.stdout.join(""), /usage: tuna doctor/);
  const bad = memoryOutput();
  assert.equal(await doctorCommand(["--gpu"], bad), 2);
  assert.match(bad.stderr.join(""), /unknown argument '--gpu'/);
});

// ---- stand-in GPU machines ----

const lib = (name: string, path?: string, version?: string): LibraryResult =>
  path === undefined ? { name, found: false, searched: [] } : { name, found: true, path, version, searched: [] };

function machine(overrides: Partial<LibrarySearchResult> = {}): LibrarySearchResult {
  return {
    dirs: ["/usr/local/cuda/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib"],
    cuda: lib("libcuda", "/usr/lib/libcuda.so.1", "1"),
    nvrtc: lib("NVRTC", "/usr/local/cuda/lib64/libnvrtc.so.13", "13"),
    nvrtcBuiltins: lib("NVRTC builtins", "/usr/local/cuda/lib64/libnvrtc-builtins.so.13.0", "13.0"),
    cublasLt: lib("cuBLASLt", "/usr/local/cuda/lib64/libcublasLt.so.13", "13"),
    nccl: lib("NCCL", "/usr/lib/x86_64-linux-gnu/libnccl.so.2", "2"),
    cudnn: lib("cuDNN", "/usr/lib/x86_64-linux-gnu/libcudnn.so.9", "9"),
    ...overrides,
  };
}

const H200: GpuInfo = {
  index: 0,
  name: "NVIDIA H200",
  totalMemoryBytes: 143771 * 2 ** 20,
  computeCapability: { major: 9, minor: 0 },
  multiprocessorCount: 132,
};

const VERSIONS = { nvrtc: "13.0", cublasLt: "13.0.2", nccl: "2.28.3", cudnn: "9.14.0" } as const;

function probes(found: LibrarySearchResult, devices: GpuInfo[], links: GpuLink[] = []): DoctorProbes {
  return {
    findLibraries: () => found,
    probeDriver: (path) => ({ ok: true, libraryPath: path, driverVersion: 13000, driverVersionText: "13.0", devices, links }),
    probeLibraryVersion: (kind, path) => ({ ok: true, libraryPath: path, version: VERSIONS[kind] }),
  };
}

async function run(p: DoctorProbes, args: string[] = []): Promise<{ code: number; text: string; stderr: string }> {
  const out = memoryOutput();
  const code = await doctorCommand(args, out, p);
  return { code, text: out.stdout.join("\n"), stderr: out.stderr.join("\n") };
}

void test("the GPU machine: driver, the H200, every library with its version, and a ready verdict", async () => {
  const { code, text } = await run(probes(machine(), [H200]));
  assert.equal(code, 0);
  assert.match(text, /^  libcuda +\/usr\/lib\/libcuda\.so\.1$/m);
  assert.match(text, /^  driver +CUDA 13\.0 \(13000\)$/m);
  // 143771 MiB = 140.4 GiB
  assert.match(text, /^  gpu 0 +NVIDIA H200, 140\.4 GiB, compute capability 9\.0 \(sm_90\), 132 SMs$/m);
  assert.match(text, /^  NVRTC +13\.0 +\/usr\/local\/cuda\/lib64\/libnvrtc\.so\.13 /m);
  assert.match(text, /^  cuBLASLt +13\.0\.2 +\/usr\/local\/cuda\/lib64\/libcublasLt\.so\.13 /m);
  assert.match(text, /^  NCCL +2\.28\.3 .*needed only for multi-GPU/m);
  assert.match(text, /^  cuDNN +9\.14\.0 .*optional/m);
  assert.doesNotMatch(text, /warning/);
  assert.ok(text.endsWith("verdict: ready for GPU training on 1 GPU (NVIDIA H200, sm_90)"), text);
});

void test("a GPU without NVRTC: the verdict says what to install; exit 0", async () => {
  const { code, text } = await run(probes(machine({ nvrtc: lib("NVRTC"), nvrtcBuiltins: lib("NVRTC builtins") }), [H200]));
  assert.equal(code, 0);
  assert.match(text, /^verdict: GPU found but NVRTC missing: install the CUDA toolkit or `pip install nvidia-cuda-nvrtc-cu12`, or set CUDA_HOME/m);
});

void test("a GPU missing NVRTC and cuBLASLt names both; a missing cuDNN alone does not matter", async () => {
  const both = await run(probes(machine({ nvrtc: lib("NVRTC"), cublasLt: lib("cuBLASLt"), cudnn: lib("cuDNN") }), [H200]));
  assert.match(both.text, /^verdict: GPU found but NVRTC missing and cuBLASLt missing: /m);
  const noCudnn = await run(probes(machine({ cudnn: lib("cuDNN") }), [H200]));
  assert.match(noCudnn.text, /^  cuDNN +not found — optional/m);
  assert.match(noCudnn.text, /^verdict: ready for GPU training on 1 GPU/m);
});

void test("an sm_75 GPU is usable but warned about: no bf16 tensor cores", async () => {
  const t4: GpuInfo = { index: 0, name: "Tesla T4", totalMemoryBytes: 15 * 2 ** 30, computeCapability: { major: 7, minor: 5 }, multiprocessorCount: 40 };
  const { code, text } = await run(probes(machine(), [t4]));
  assert.equal(code, 0);
  assert.match(text, /^warning: GPU 0 \(Tesla T4\) has compute capability 7\.5 < 8\.0: it lacks bf16 tensor cores/m);
  assert.match(text, /^verdict: ready for GPU training on 1 GPU \(Tesla T4, sm_75\); without bf16 tensor cores/m);
});

void test("two GPUs without NCCL: ready for one, with a warning that multi-GPU needs NCCL", async () => {
  const { text } = await run(probes(machine({ nccl: lib("NCCL") }), [H200, { ...H200, index: 1 }]));
  assert.match(text, /^warning: 2 GPUs but NCCL is missing: multi-GPU training needs it/m);
  assert.match(text, /^verdict: ready for GPU training on 1 GPU of 2 \(NVIDIA H200, sm_90\); multi-GPU needs NCCL$/m);
  const withNccl = await run(probes(machine(), [H200, { ...H200, index: 1 }]));
  assert.match(withNccl.text, /^verdict: ready for GPU training on 2 GPUs \(NVIDIA H200, sm_90\)$/m);
});

void test("a driver that finds no device: CPU-only verdict carrying cuInit's error; JSON says the same", async () => {
  const p: DoctorProbes = {
    ...probes(machine(), []),
    probeDriver: (path) => ({
      ok: false,
      libraryPath: path,
      error: "cuInit failed: CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)",
      driverVersion: 13000,
      driverVersionText: "13.0",
    }),
  };
  const { code, text } = await run(p);
  assert.equal(code, 0);
  assert.match(text, /^  driver +CUDA 13\.0 \(13000\) — cuInit failed: CUDA_ERROR_NO_DEVICE/m);
  assert.match(text, /^verdict: CPU only — the NVIDIA driver at \/usr\/lib\/libcuda\.so\.1 is unusable \(cuInit failed: CUDA_ERROR_NO_DEVICE/m);
  const json = await run(p, ["--json"]);
  const report = JSON.parse(json.text) as DoctorReport;
  assert.equal(report.verdict.status, "cpu-only");
  assert.equal(report.gpu.driver?.ok, false);
  assert.equal(report.gpu.driver.version, 13000);
});

void test("a library found but unloadable counts as missing", async () => {
  const p: DoctorProbes = {
    ...probes(machine(), [H200]),
    probeLibraryVersion: (kind, path) =>
      kind === "cublasLt" ? { ok: false, libraryPath: path, error: "could not load x: libcublas.so.13: cannot open" } : { ok: true, libraryPath: path, version: "1.0" },
  };
  const { text } = await run(p);
  assert.match(text, /cannot be used: could not load x/);
  assert.match(text, /^verdict: GPU found but cuBLASLt unloadable: /m);
});

void test("an unexpected failure inside the probe exits 1 and says so on stderr", async () => {
  const p: DoctorProbes = {
    ...probes(machine(), [H200]),
    probeDriver: () => {
      throw new Error("koffi: bad marshalling");
    },
  };
  const { code, text, stderr } = await run(p);
  assert.equal(code, 1);
  assert.equal(text, "");
  assert.match(stderr, /the check itself failed: koffi: bad marshalling/);
});

void test("a GPU machine without the CUDA headers: doctor names cuda_bf16.h and where it looked; the verdict is incomplete", async () => {
  const searched = ["/opt/cuda/include", "/usr/local/cuda/include"];
  const missing = await run({ ...probes(machine(), [H200]), findHeaders: () => ({ searched }) });
  assert.match(missing.text, /^  headers +not found in \/opt\/cuda\/include, \/usr\/local\/cuda\/include — NVRTC needs cuda_bf16\.h/m);
  assert.match(missing.text, /^verdict: GPU found but the CUDA headers \(cuda_bf16\.h, which NVRTC needs to compile tuna's kernels\) missing: .*`pip install nvidia-cuda-runtime-cu12`/m);
  const present = await run({ ...probes(machine(), [H200]), findHeaders: () => ({ dir: "/usr/local/cuda/include", searched }) });
  assert.match(present.text, /^  headers +\/usr\/local\/cuda\/include \(cuda_bf16\.h\)$/m);
  assert.match(present.text, /^verdict: ready for GPU training/m);
});

void test("several GPUs: each link's peer-to-peer access is listed, and GPUs that cannot reach each other directly are a warning", async () => {
  const second: GpuInfo = { ...H200, index: 1 };
  const third: GpuInfo = { ...H200, index: 2 };
  const links: GpuLink[] = [
    { from: 0, to: 1, peerAccess: true, nativeAtomics: true, performanceRank: 0 },
    { from: 1, to: 0, peerAccess: true, nativeAtomics: true, performanceRank: 0 },
    { from: 0, to: 2, peerAccess: false, nativeAtomics: false, performanceRank: 0 },
  ];
  const { code, text } = await run(probes(machine(), [H200, second, third], links));
  assert.equal(code, 0);
  assert.match(text, /^  link +gpu 0 -> gpu 1: peer-to-peer \(performance rank 0, native atomics\)$/m);
  assert.match(text, /^  link +gpu 0 -> gpu 2: no peer-to-peer \(through host memory\)$/m);
  assert.match(text, /^warning: GPU 0 -> GPU 2: no peer-to-peer access; NCCL moves that traffic through host memory/m);
  assert.match(text, /^verdict: ready for GPU training on 3 GPUs/m);
});
