// readAccelerateConfig on the peft examples/sft accelerate files and on hand-written variants:
// DEEPSPEED, FSDP (names, numbers, FSDP2), MULTI_GPU, NO, and malformed files.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readAccelerateConfig, describeLaunch } from "../../src/config/index.ts";
import { isTunaError } from "../../src/util/errors.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;

async function withFile(text: string, fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "tuna-accelerate-"));
  try {
    const path = join(dir, "accelerate.yaml");
    await writeFile(path, text);
    await fn(path);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function rejection(fn: () => Promise<unknown>, code: string): Promise<string> {
  try {
    await fn();
  } catch (e) {
    assert.ok(isTunaError(e), `expected a TunaError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e.message;
  }
  assert.fail("expected an error");
}

void test("peft deepspeed_config_z3_qlora.yaml: ZeRO-3, no offload, zero3 init, bf16, 2 processes", async () => {
  const path = join(FIXTURES, "deepspeed_config_z3_qlora.yaml");
  const launch = await readAccelerateConfig(path);
  assert.deepEqual(launch, {
    numProcesses: 2,
    numMachines: 1,
    machineRank: 0,
    mainProcessIp: undefined,
    mainProcessPort: undefined,
    gpuIds: undefined,
    mixedPrecision: "bf16",
    sharding: {
      kind: "zero",
      stage: 3,
      offloadParams: false,
      offloadOptimizer: false,
      offloadParamDevice: "none",
      offloadOptimizerDevice: "none",
      zero3Init: true,
    },
    source: path,
  });
  assert.equal(describeLaunch(launch), "2 processes on 1 machine, mixed_precision bf16, DeepSpeed ZeRO stage 3 (no offload, zero3_init)");
});

void test("peft fsdp_config_qlora.yaml: FULL_SHARD with CPU offload, mixed_precision 'no'", async () => {
  const path = join(FIXTURES, "fsdp_config_qlora.yaml");
  const launch = await readAccelerateConfig(path);
  assert.deepEqual(launch, {
    numProcesses: 2,
    numMachines: 1,
    machineRank: 0,
    mainProcessIp: undefined,
    mainProcessPort: undefined,
    gpuIds: undefined,
    mixedPrecision: "no",
    sharding: {
      kind: "fsdp",
      strategy: "FULL_SHARD",
      offloadParams: true,
      offloadOptimizer: true,
      cpuRamEfficientLoading: true,
      useOrigParams: false,
    },
    source: path,
  });
});

void test("DeepSpeed offload devices and the stage default", async () => {
  const text = "distributed_type: DEEPSPEED\nnum_processes: 4\ndeepspeed_config:\n  offload_param_device: cpu\n  offload_optimizer_device: nvme\n";
  await withFile(text, async (path) => {
    const launch = await readAccelerateConfig(path);
    assert.deepEqual(launch.sharding, {
      kind: "zero",
      stage: 2, // accelerate's DeepSpeedPlugin default
      offloadParams: true,
      offloadOptimizer: true,
      offloadParamDevice: "cpu",
      offloadOptimizerDevice: "nvme",
      zero3Init: false,
    });
    assert.equal(launch.mixedPrecision, undefined);
  });
});

void test("FSDP strategy given as an old-style number, and FSDP2's reshard_after_forward", async () => {
  await withFile("distributed_type: FSDP\nfsdp_config:\n  fsdp_sharding_strategy: 2\n", async (path) => {
    const launch = await readAccelerateConfig(path);
    assert.equal(launch.sharding.kind === "fsdp" ? launch.sharding.strategy : "", "SHARD_GRAD_OP");
  });
  await withFile("distributed_type: FSDP\nfsdp_config:\n  fsdp_version: 2\n  fsdp_reshard_after_forward: false\n", async (path) => {
    const launch = await readAccelerateConfig(path);
    assert.equal(launch.sharding.kind === "fsdp" ? launch.sharding.strategy : "", "SHARD_GRAD_OP");
  });
});

void test("MULTI_GPU is DDP, NO is no sharding, and a missing distributed_type follows num_processes", async () => {
  const cases: [string, string, number][] = [
    ["distributed_type: MULTI_GPU\nnum_processes: 8\ngpu_ids: all\nmixed_precision: fp16\n", "ddp", 8],
    ["distributed_type: 'NO'\n", "none", 1],
    ["num_processes: 3\n", "ddp", 3],
    ["mixed_precision: bf16\n", "none", 1],
  ];
  for (const [text, kind, processes] of cases) {
    await withFile(text, async (path) => {
      const launch = await readAccelerateConfig(path);
      assert.equal(launch.sharding.kind, kind, text);
      assert.equal(launch.numProcesses, processes, text);
      assert.equal(launch.numMachines, 1);
    });
  }
});

void test("malformed accelerate files are clear errors", async () => {
  await withFile("num_processes: two\ndeepspeed_config:\n  zero_stage: 4\n", async (path) => {
    const message = await rejection(() => readAccelerateConfig(path), "FILE_FORMAT");
    assert.ok(message.includes(path));
    assert.match(message, /num_processes = "two"/);
    assert.match(message, /deepspeed_config.zero_stage = 4/);
  });
  await withFile("distributed_type: [DEEPSPEED\n", async (path) => {
    assert.match(await rejection(() => readAccelerateConfig(path), "FILE_FORMAT"), /not valid YAML/);
  });
  await withFile("- just\n- a list\n", async (path) => {
    assert.match(await rejection(() => readAccelerateConfig(path), "FILE_FORMAT"), /mapping/);
  });
  await withFile("distributed_type: TPU\n", async (path) => {
    assert.match(await rejection(() => readAccelerateConfig(path), "UNSUPPORTED"), /distributed_type TPU is not supported/);
  });
  await withFile("distributed_type: DEEPSPEED\ndeepspeed_config:\n  deepspeed_config_file: ds.json\n", async (path) => {
    assert.match(await rejection(() => readAccelerateConfig(path), "UNSUPPORTED"), /deepspeed_config_file/);
  });
  await rejection(() => readAccelerateConfig(join(FIXTURES, "missing.yaml")), "FILE_NOT_FOUND");
});

void test("a relative path is resolved and reported absolute", async () => {
  const launch = await readAccelerateConfig("test/config/fixtures/fsdp_config_qlora.yaml");
  assert.equal(launch.source, join(process.cwd(), "test/config/fixtures/fsdp_config_qlora.yaml"));
});
