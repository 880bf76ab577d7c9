// `tuna doctor`: reports Node, CPU, memory, the NVIDIA driver, GPUs and CUDA libraries, then a verdict.
// It reports and does not fail: no GPU is a normal outcome (exit 0); only a broken probe exits 1.
import os from "node:os";
import { locateCudaIncludeDir } from "../../backend/cuda/nvrtc.ts";
import type { CliOutput } from "../output.ts";
import { findCudaLibraries, type LibraryResult, type LibrarySearchResult } from "../../gpu/discover.ts";
import {
  probeDriver,
  probeLibraryVersion,
  type DriverProbe,
  type GpuInfo,
  type GpuLink,
  type LibraryVersionProbe,
  type VersionedLibrary,
} from "../../gpu/driver-probe.ts";
import { errorMessage } from "../../util/errors.ts";

const MIN_NODE_MAJOR = 20;
const GIB = 1024 ** 3;
const CPU_ONLY_TAIL = "tuna will train on the CPU backend (slow; fine for tiny models and tests).";

export interface LibraryReport {
  name: string;
  found: boolean;
  path?: string;
  fileVersion?: string; // from the file name: "13" for libnvrtc.so.13
  version?: string; // asked from the library itself: "13.0"
  error?: string; // the library was found but could not be loaded or asked
  role: string; // why tuna wants it
}

export interface DoctorReport {
  node: { version: string; ok: boolean; required: string };
  platform: { os: string; arch: string; release: string };
  cpu: { model: string; cores: number };
  memory: { totalBytes: number; totalGiB: number };
  gpu: {
    searchPath: string[];
    libcuda: { found: boolean; path?: string };
    driver?: { ok: boolean; version?: number; versionText?: string; error?: string };
    devices: (GpuInfo & { totalMemoryGiB: number; sm: string })[];
    /** Peer-to-peer between each ordered pair of GPUs (what NCCL can use without host memory). */
    links: GpuLink[];
    libraries: { nvrtc: LibraryReport; nvrtcBuiltins: LibraryReport; cublasLt: LibraryReport; nccl: LibraryReport; cudnn: LibraryReport };
    /** The CUDA headers NVRTC compiles tuna's kernels against (cuda_bf16.h); absent when not checked. */
    headers?: { found: boolean; dir?: string; searched: string[] };
  };
  warnings: string[];
  verdict: { status: "cpu-only" | "gpu-incomplete" | "gpu-ready"; text: string };
}

/** What the report is gathered from; the defaults look at this machine, tests pass their own. */
export interface DoctorProbes {
  findLibraries: () => LibrarySearchResult;
  probeDriver: (libcudaPath: string) => DriverProbe;
  probeLibraryVersion: (kind: VersionedLibrary, path: string) => LibraryVersionProbe;
  /** Where cuda_bf16.h is, searched as the CUDA backend searches (left out: not checked). */
  findHeaders?: (nvrtcPath: string | undefined) => { dir?: string; searched: string[] };
}

const machineProbes: DoctorProbes = {
  findLibraries: () => findCudaLibraries(),
  probeDriver,
  probeLibraryVersion,
  findHeaders: (nvrtcPath) => locateCudaIncludeDir(nvrtcPath === undefined ? {} : { nvrtcPath }),
};

const roundGiB = (bytes: number): number => Math.round((bytes / GIB) * 10) / 10;

function libraryReport(found: LibraryResult, role: string, kind: VersionedLibrary | undefined, probes: DoctorProbes): LibraryReport {
  const report: LibraryReport = { name: found.name, found: found.found, role };
  if (found.path !== undefined) report.path = found.path;
  if (found.version !== undefined) report.fileVersion = found.version;
  if (found.path !== undefined && kind !== undefined) {
    const probe = probes.probeLibraryVersion(kind, found.path);
    if (probe.ok) report.version = probe.version;
    else report.error = probe.error;
  }
  return report;
}

/** Found and, where it can be asked, answered: a library that fails to load is as good as missing. */
const usable = (lib: LibraryReport): boolean => lib.found && lib.error === undefined;

function describeGpus(devices: GpuInfo[]): string {
  const names = [...new Set(devices.map((d) => `${d.name}, sm_${d.computeCapability.major}${d.computeCapability.minor}`))];
  return names.join("; ");
}

function verdict(report: Omit<DoctorReport, "verdict" | "warnings">, warnings: string[]): DoctorReport["verdict"] {
  const { gpu } = report;
  if (!gpu.libcuda.found) {
    return { status: "cpu-only", text: `CPU only — no NVIDIA driver (libcuda) found; ${CPU_ONLY_TAIL}` };
  }
  if (gpu.driver?.ok !== true) {
    return { status: "cpu-only", text: `CPU only — the NVIDIA driver at ${gpu.libcuda.path ?? "?"} is unusable (${gpu.driver?.error ?? "not probed"}); ${CPU_ONLY_TAIL}` };
  }
  if (gpu.devices.length === 0) {
    return { status: "cpu-only", text: `CPU only — the NVIDIA driver reports no GPU; ${CPU_ONLY_TAIL}` };
  }
  const { nvrtc, nvrtcBuiltins, cublasLt, nccl } = gpu.libraries;
  const missing: string[] = [];
  const fixes: string[] = [];
  if (!usable(nvrtc)) {
    missing.push(nvrtc.found ? "NVRTC unloadable" : "NVRTC missing");
    fixes.push("`pip install nvidia-cuda-nvrtc-cu12`");
  } else if (!nvrtcBuiltins.found) {
    missing.push(`NVRTC's builtins (libnvrtc-builtins) missing beside ${nvrtc.path ?? "NVRTC"}`);
    fixes.push("`pip install nvidia-cuda-nvrtc-cu12`");
  }
  if (!usable(cublasLt)) {
    missing.push(cublasLt.found ? "cuBLASLt unloadable" : "cuBLASLt missing");
    fixes.push("`pip install nvidia-cublas-cu12`");
  }
  if (gpu.headers?.found === false) {
    missing.push("the CUDA headers (cuda_bf16.h, which NVRTC needs to compile tuna's kernels) missing");
    fixes.push("`pip install nvidia-cuda-runtime-cu12`");
  }
  if (missing.length > 0) {
    return {
      status: "gpu-incomplete",
      text: `GPU found but ${missing.join(" and ")}: install the CUDA toolkit or ${fixes.join(" and ")}, or set CUDA_HOME; until then ${CPU_ONLY_TAIL}`,
    };
  }
  const count = gpu.devices.length;
  if (count > 1 && !usable(nccl)) {
    warnings.push(`${count} GPUs but NCCL is ${nccl.found ? "unloadable" : "missing"}: multi-GPU training needs it (\`pip install nvidia-nccl-cu12\`).`);
    return { status: "gpu-ready", text: `ready for GPU training on 1 GPU of ${count} (${describeGpus(gpu.devices)}); multi-GPU needs NCCL` };
  }
  const lowCc = gpu.devices.some((d) => d.computeCapability.major < 8);
  return {
    status: "gpu-ready",
    text: `ready for GPU training on ${count} GPU${count === 1 ? "" : "s"} (${describeGpus(gpu.devices)})${lowCc ? "; without bf16 tensor cores (see warning)" : ""}`,
  };
}

/** Gathers every fact and the verdict. Throws only when a probe fails unexpectedly (a bug). */
export function collectDoctorReport(probes: DoctorProbes = machineProbes): DoctorReport {
  const nodeMajor = Number(process.versions.node.split(".")[0]);
  const cpus = os.cpus();
  const found = probes.findLibraries();
  const warnings: string[] = [];

  const gpu: DoctorReport["gpu"] = {
    searchPath: found.dirs,
    libcuda: found.cuda.path === undefined ? { found: false } : { found: true, path: found.cuda.path },
    devices: [],
    links: [],
    libraries: {
      nvrtc: libraryReport(found.nvrtc, "compiles tuna's CUDA kernels (required for GPU training)", "nvrtc", probes),
      nvrtcBuiltins: libraryReport(found.nvrtcBuiltins, "loaded by NVRTC at compile time (required with NVRTC)", undefined, probes),
      cublasLt: libraryReport(found.cublasLt, "matrix multiplications (required for GPU training)", "cublasLt", probes),
      nccl: libraryReport(found.nccl, "needed only for multi-GPU training", "nccl", probes),
      cudnn: libraryReport(found.cudnn, "optional; tuna does not need it", "cudnn", probes),
    },
  };
  if (probes.findHeaders !== undefined && found.cuda.path !== undefined) {
    const h = probes.findHeaders(found.nvrtc.path);
    gpu.headers = h.dir === undefined ? { found: false, searched: h.searched } : { found: true, dir: h.dir, searched: h.searched };
  }
  if (found.cuda.path !== undefined) {
    const probe = probes.probeDriver(found.cuda.path);
    gpu.driver = { ok: probe.ok };
    if (probe.driverVersion !== undefined) gpu.driver.version = probe.driverVersion;
    if (probe.driverVersionText !== undefined) gpu.driver.versionText = probe.driverVersionText;
    if (probe.ok) {
      gpu.devices = probe.devices.map((d) => ({
        ...d,
        totalMemoryGiB: roundGiB(d.totalMemoryBytes),
        sm: `sm_${d.computeCapability.major}${d.computeCapability.minor}`,
      }));
      gpu.links = probe.links;
      const isolated = probe.links.filter((l) => !l.peerAccess);
      if (isolated.length > 0) {
        warnings.push(`${isolated.map((l) => `GPU ${l.from} -> GPU ${l.to}`).join(", ")}: no peer-to-peer access; NCCL moves that traffic through host memory, so multi-GPU training between them is slower.`);
      }
    } else {
      gpu.driver.error = probe.error;
    }
  }
  for (const d of gpu.devices) {
    const cc = `${d.computeCapability.major}.${d.computeCapability.minor}`;
    if (d.computeCapability.major < 8) {
      warnings.push(`GPU ${d.index} (${d.name}) has compute capability ${cc} < 8.0: it lacks bf16 tensor cores, so bf16 training will be slow or unsupported.`);
    }
  }

  const facts = {
    node: { version: process.version, ok: nodeMajor >= MIN_NODE_MAJOR, required: `>= ${MIN_NODE_MAJOR}` },
    platform: { os: process.platform, arch: process.arch, release: os.release() },
    cpu: { model: cpus[0]?.model.trim() ?? "unknown", cores: cpus.length },
    memory: { totalBytes: os.totalmem(), totalGiB: roundGiB(os.totalmem()) },
    gpu,
  };
  if (!facts.node.ok) warnings.push(`Node ${process.version} is older than tuna needs (${facts.node.required}); install Node 20 or newer.`);
  const result = verdict(facts, warnings);
  return { ...facts, warnings, verdict: result };
}

function formatLibrary(label: string, lib: LibraryReport): string {
  const head = `  ${label.padEnd(10)} `;
  if (!lib.found) return `${head}not found — ${lib.role}`;
  const version = lib.version ?? lib.fileVersion ?? "version unknown";
  const problem = lib.error === undefined ? "" : `\n  ${"".padEnd(10)} cannot be used: ${lib.error}`;
  return `${head}${version}  ${lib.path ?? ""} — ${lib.role}${problem}`;
}

/** The report as the lines a person reads. */
export function formatDoctorReport(report: DoctorReport): string {
  const { gpu } = report;
  const lines = [
    "system",
    `  ${"node".padEnd(10)} ${report.node.version} (${report.node.ok ? "ok" : "too old"}: tuna needs ${report.node.required})`,
    `  ${"platform".padEnd(10)} ${report.platform.os} ${report.platform.arch} (${report.platform.release})`,
    `  ${"cpu".padEnd(10)} ${report.cpu.model}, ${report.cpu.cores} cores`,
    `  ${"memory".padEnd(10)} ${report.memory.totalGiB} GiB`,
    "",
    "gpu",
  ];
  if (gpu.libcuda.path === undefined) {
    lines.push(`  ${"libcuda".padEnd(10)} not found (searched ${gpu.searchPath.length} directories; --json lists them)`);
  } else {
    lines.push(`  ${"libcuda".padEnd(10)} ${gpu.libcuda.path}`);
    const driver = gpu.driver;
    const version = driver?.versionText === undefined ? "unknown" : `CUDA ${driver.versionText} (${driver.version ?? "?"})`;
    lines.push(`  ${"driver".padEnd(10)} ${version}${driver?.error === undefined ? "" : ` — ${driver.error}`}`);
    if (driver?.ok === true && gpu.devices.length === 0) lines.push(`  ${"gpus".padEnd(10)} none`);
    for (const d of gpu.devices) {
      const cc = `${d.computeCapability.major}.${d.computeCapability.minor}`;
      lines.push(`  ${`gpu ${d.index}`.padEnd(10)} ${d.name}, ${d.totalMemoryGiB} GiB, compute capability ${cc} (${d.sm}), ${d.multiprocessorCount} SMs`);
    }
    for (const l of gpu.links) {
      const how = l.peerAccess ? `peer-to-peer (performance rank ${l.performanceRank}${l.nativeAtomics ? ", native atomics" : ""})` : "no peer-to-peer (through host memory)";
      lines.push(`  ${"link".padEnd(10)} gpu ${l.from} -> gpu ${l.to}: ${how}`);
    }
  }
  const libs = gpu.libraries;
  lines.push(
    formatLibrary("NVRTC", libs.nvrtc),
    formatLibrary("  builtins", libs.nvrtcBuiltins),
    formatLibrary("cuBLASLt", libs.cublasLt),
    formatLibrary("NCCL", libs.nccl),
    formatLibrary("cuDNN", libs.cudnn),
  );
  if (gpu.headers !== undefined) {
    lines.push(
      `  ${"headers".padEnd(10)} ${gpu.headers.found ? `${gpu.headers.dir ?? "?"} (cuda_bf16.h)` : `not found in ${gpu.headers.searched.join(", ")} — NVRTC needs cuda_bf16.h to compile tuna's kernels (set CUDA_HOME)`}`,
    );
  }
  if (report.warnings.length > 0) {
    lines.push("", ...report.warnings.map((w) => `warning: ${w}`));
  }
  lines.push("", `verdict: ${report.verdict.text}`);
  return lines.join("\n");
}

const USAGE = `usage: tuna doctor [--json]

Checks Node, CPU, memory, the NVIDIA driver, GPUs and the CUDA libraries tuna loads, then gives a verdict.
  --json   print the same facts as one JSON object
Exits 0 whether or not a GPU is usable; 1 only if the check itself fails.`;

export function doctorCommand(args: string[], output: CliOutput, probes: DoctorProbes = machineProbes): Promise<number> {
  let json = false;
  for (const arg of args) {
    if (arg === "--json") json = true;
    else if (arg === "--help" || arg === "-h") {
      output.out(USAGE);
      return Promise.resolve(0);
    } else {
      output.err(`tuna doctor: unknown argument '${arg}'.\n\n${USAGE}`);
      return Promise.resolve(2);
    }
  }
  let report: DoctorReport;
  try {
    report = collectDoctorReport(probes);
  } catch (e) {
    output.err(`tuna doctor: the check itself failed: ${errorMessage(e)}`);
    if (e instanceof Error && e.stack !== undefined) output.err(e.stack);
    return Promise.resolve(1);
  }
  output.out(json ? JSON.stringify(report, null, 2) : formatDoctorReport(report));
  return Promise.resolve(0);
}
