// Compiles every src/backend/cuda/kernels/*.cu with the local nvcc (sm_90, no GPU needed), keeps them to what
// NVRTC accepts, and checks that every kernel an op wrapper requests exists in the file it names.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { cuFiles, kernelRequests, kernelSignatures, KERNELS_DIR } from "./kernel-source.ts";

const run = promisify(execFile);

function nvccMissing(): string | false {
  const probe = spawnSync("nvcc", ["--version"], { encoding: "utf8" });
  if (probe.error === undefined && probe.status === 0) return false;
  return `nvcc is not on PATH (${probe.error?.message ?? `exit ${probe.status}`}); install the CUDA toolkit to compile the kernels`;
}

const missing = nvccMissing();
// CI must compile the kernels: there a missing nvcc is a failure, not a skip.
const skip = missing !== false && process.env.CI === undefined ? missing : false;

void test("every kernels/*.cu compiles with nvcc for sm_90", { skip }, async () => {
  if (missing !== false) assert.fail(`${missing} (CI is set, so the kernels must compile)`);
  const dir = await mkdtemp(path.join(os.tmpdir(), "tuna-kernels-"));
  try {
    const files = cuFiles();
    assert.ok(files.length > 0, `no .cu files in ${KERNELS_DIR}`);
    const failures = await Promise.all(
      files.map(async (file) => {
        const args = ["-cubin", "-arch=sm_90", "-std=c++17", "-I", KERNELS_DIR, "-o", path.join(dir, `${file}.cubin`), path.join(KERNELS_DIR, file)];
        try {
          await run("nvcc", args, { maxBuffer: 16 * 1024 * 1024 });
          return null;
        } catch (e) {
          const err = e as { stdout?: string; stderr?: string; message: string };
          return `${file}:\n${err.stderr ?? ""}${err.stdout ?? ""}`.trim() || `${file}: ${err.message}`;
        }
      }),
    );
    const failed = failures.filter((f): f is string => f !== null);
    assert.equal(failed.length, 0, `nvcc failed on ${failed.length} file(s):\n${failed.join("\n\n")}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

void test("kernel files include only what NVRTC has (no host standard library headers)", async () => {
  const allowed = new Set(["<cuda_bf16.h>", "<cuda_fp16.h>"]);
  for (const file of cuFiles()) {
    const source = await readFile(path.join(KERNELS_DIR, file), "utf8");
    for (const m of source.matchAll(/^\s*#\s*include\s+(\S+)/gm)) {
      const target = m[1]!;
      const local = /^"[\w.-]+\.cuh"$/.test(target);
      assert.ok(local || allowed.has(target), `${file} includes ${target}: NVRTC has no host headers; use CUDA built-ins or a kernels/*.cuh`);
    }
  }
});

void test("every kernel the op wrappers request exists as an extern \"C\" __global__ in the named file", () => {
  const signatures = new Map(cuFiles().map((f) => [f, kernelSignatures(f)]));
  const { requests, modulesByFile } = kernelRequests();
  assert.ok(requests.length > 0, "no .fn(\"...\") requests found in src/backend/cuda/ops");
  const problems: string[] = [];
  for (const [opsFile, modules] of modulesByFile) {
    for (const m of modules) if (!signatures.has(m)) problems.push(`ops/${opsFile} opens module "${m}", which is not a file in kernels/`);
  }
  for (const { opsFile, module, kernel } of requests) {
    // A .fn on a module opened earlier in the file: it must be in one of the modules that file opens.
    const candidates = module !== null ? [module] : (modulesByFile.get(opsFile) ?? []);
    if (!candidates.some((m) => signatures.get(m)?.has(kernel) === true)) {
      problems.push(`ops/${opsFile} requests kernel "${kernel}", not an extern "C" __global__ in ${candidates.join(" or ") || "any module it opens"}`);
    }
  }
  assert.deepEqual(problems, []);
});
