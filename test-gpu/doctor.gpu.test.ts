// GPU-machine test for discovery, the driver probe and `tuna doctor` (run there by hand via `npm run test:gpu`,
// never in CI): the driver, at least one GPU of compute capability >= 8.0, and all four libraries with versions.
import { test } from "node:test";
import assert from "node:assert/strict";
import { findCudaLibraries } from "../src/gpu/discover.ts";
import { probeDriver, probeLibraryVersion, type VersionedLibrary } from "../src/gpu/driver-probe.ts";
import { doctorCommand, type DoctorReport } from "../src/cli/commands/doctor.ts";
import { memoryOutput } from "../src/cli/output.ts";

const found = findCudaLibraries();

void test("libcuda is found and the driver sees at least one GPU of compute capability >= 8.0", () => {
  assert.equal(found.cuda.found, true, `libcuda not found in: ${found.dirs.join(", ")}`);
  const probe = probeDriver(found.cuda.path ?? "");
  assert.ok(probe.ok, probe.ok ? "" : probe.error);
  assert.ok(probe.driverVersion >= 12000, `driver ${probe.driverVersion}`);
  assert.ok(probe.devices.length >= 1);
  for (const device of probe.devices) {
    assert.ok(device.computeCapability.major >= 8, `${device.name}: sm_${device.computeCapability.major}${device.computeCapability.minor}`);
    assert.ok(device.multiprocessorCount > 0);
    assert.ok(device.totalMemoryBytes > 8 * 2 ** 30, `${device.name}: ${device.totalMemoryBytes} bytes`);
    assert.match(device.name, /\S/);
    assert.match(device.uuid ?? "", /^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  }
});

void test("NVRTC (with builtins), cuBLASLt, NCCL and cuDNN are found and report their versions", () => {
  assert.ok(found.nvrtcBuiltins.found, "libnvrtc-builtins not found");
  const libraries: [VersionedLibrary, typeof found.nvrtc][] = [
    ["nvrtc", found.nvrtc],
    ["cublasLt", found.cublasLt],
    ["nccl", found.nccl],
    ["cudnn", found.cudnn],
  ];
  for (const [kind, lib] of libraries) {
    assert.ok(lib.found && lib.path !== undefined, `${lib.name} not found in: ${lib.searched.join(", ")}`);
    assert.match(lib.version ?? "", /^\d+(\.\d+)?$/, `${lib.name}: version from ${lib.path}`);
    const probe = probeLibraryVersion(kind, lib.path);
    assert.ok(probe.ok, probe.ok ? "" : probe.error);
    assert.match(probe.version, /^\d+\.\d+(\.\d+)?$/);
    // The version the library reports has the major version its file name promises.
    assert.equal(probe.version.split(".")[0], lib.version?.split(".")[0], `${lib.name}: ${probe.version} from ${lib.path}`);
  }
});

void test("tuna doctor --json gives the ready verdict", async () => {
  const out = memoryOutput();
  assert.equal(await doctorCommand(["--json"], out), 0);
  const report = JSON.parse(out.stdout.join("")) as DoctorReport;
  assert.equal(report.verdict.status, "gpu-ready", report.verdict.text);
  assert.match(report.verdict.text, /^ready for GPU training on \d+ GPUs? \(/);
});
