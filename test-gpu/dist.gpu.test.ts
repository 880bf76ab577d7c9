// The distributed layer on the one GPU we can get: NCCL loads and runs a one-rank communicator through the
// real code path (non-blocking init, staged collectives, finalize); two processes sharing the GPU train through
// the host transport with the CUDA backend and match one process; a 2-rank NCCL job on one GPU is refused
// with a clear message (NCCL cannot put two ranks on one device).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCudaBackend } from "../src/backend/cuda/index.ts";
import { findCudaLibraries } from "../src/gpu/discover.ts";
import { probeDriver } from "../src/gpu/driver-probe.ts";
import { loadNccl } from "../src/dist/nccl/library.ts";
import { createNcclCollective, driverStreams, legacyStreamIdle } from "../src/dist/nccl/collective.ts";
import { packageRoot } from "../src/util/package-root.ts";

const root = packageRoot(import.meta.url);
let tmp = "";
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tuna-gpu-dist-"));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

void test("NCCL: a one-rank communicator through the real library (init polled, every collective, finalize)", async () => {
  const libs = findCudaLibraries();
  assert.ok(libs.nccl.found && libs.nccl.path !== undefined, `NCCL not found in ${libs.nccl.searched.join(", ")}`);
  const nccl = loadNccl(libs.nccl.path);
  console.log(`NCCL ${nccl.version} at ${nccl.path}`);
  const backend = createCudaBackend();
  try {
    const c = await createNcclCollective({ nccl, device: backend.device, streamIdle: legacyStreamIdle(libs.cuda.path!), rank: 0, worldSize: 1, uniqueId: nccl.newUniqueId(), timeoutMs: 30_000 });
    const data = Float32Array.from({ length: 1 << 20 }, (_, i) => Math.sin(i));
    const reduced = data.slice();
    await c.allReduceSum(reduced);
    assert.deepEqual(reduced, data);
    assert.deepEqual(await c.reduceScatterSum(data), data);
    assert.deepEqual(await c.allGather(data.subarray(0, 1000)), data.subarray(0, 1000));
    const bytes = new Uint8Array([5, 6, 7]);
    await c.broadcast(bytes, 0);
    assert.deepEqual([...bytes], [5, 6, 7]);
    await c.barrier();
    await c.close();
    // The communication stream (gradient buckets): device memory, its own stream, drained back.
    const side = await createNcclCollective({ nccl, device: backend.device, streamIdle: legacyStreamIdle(libs.cuda.path!), rank: 0, worldSize: 1, uniqueId: nccl.newUniqueId(), timeoutMs: 30_000, streams: driverStreams(libs.cuda.path!) });
    const ptr = backend.device.alloc(data.byteLength, "grads");
    backend.device.upload(ptr, data);
    side.device!.allReduceOnDevice(ptr + 4n * 1000n, data.length - 1000);
    side.device!.allReduceOnDevice(ptr, 1000);
    await side.device!.drain();
    const back = new Float32Array(data.length);
    backend.device.download(back, ptr);
    assert.deepEqual(back, data);
    backend.device.free(ptr);
    await side.close();
  } finally {
    backend.dispose();
  }
});

const flags = (out: string, ga: number): string[] => [
  "--model_name_or_path", join(root, "examples/tiny-llama"),
  "--dataset_name", join(root, "test/fixtures/chat-small.jsonl"),
  "--splits", "train", "--chat_template_format", "chatml", "--assistant_only_loss",
  "--use_peft_lora", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0",
  "--packing", "--max_seq_length", "48",
  "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", String(ga),
  "--learning_rate", "2e-3", "--logging_steps", "1", "--max_steps", "5",
  "--save_strategy", "no", "--report_to", "none", "--seed", "5", "--device", "cuda",
  "--output_dir", out,
];

async function losses(out: string): Promise<number[]> {
  return (await readFile(join(out, "metrics.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as { loss?: number }).filter((m) => m.loss !== undefined).map((m) => m.loss!);
}

void test("two processes sharing the GPU (TUNA_COLLECTIVE=host) reproduce one process with the same global batch", () => {
  const single = join(tmp, "single");
  const one = spawnSync(process.execPath, ["bin/tuna.js", "train", ...flags(single, 2)], { cwd: root, encoding: "utf8", timeout: 300_000 });
  assert.equal(one.status, 0, one.stderr);
  const shared = join(tmp, "shared");
  const two = spawnSync(process.execPath, ["bin/tuna.js", "launch", "--nproc_per_node", "2", "--master_port", "29611", "tuna", "train", ...flags(shared, 1)], {
    cwd: root,
    encoding: "utf8",
    timeout: 300_000,
    env: { ...process.env, TUNA_COLLECTIVE: "host" },
  });
  assert.equal(two.status, 0, two.stderr);
  return Promise.all([losses(single), losses(shared)]).then(([a, b]) => {
    assert.equal(b.length, a.length);
    b.forEach((loss, i) => {
      assert.ok(Math.abs(loss - a[i]!) / Math.abs(a[i]!) < 1e-4, `step ${i + 1}: ${loss} vs ${a[i]!}`);
    });
    console.log(`losses one process ${a.map((x) => x.toFixed(6)).join(" ")}; two sharing ${b.map((x) => x.toFixed(6)).join(" ")}`);
  });
});

function gpuCount(): number {
  const probe = probeDriver(findCudaLibraries().cuda.path ?? "libcuda.so.1");
  return probe.ok ? probe.devices.length : 0;
}

void test("two NCCL ranks on a machine with one GPU: refused with the reason and the way out, quickly", { skip: gpuCount() === 1 ? false : "needs a machine with exactly one GPU" }, () => {
  const out = join(tmp, "refused");
  const started = Date.now();
  const r = spawnSync(process.execPath, ["bin/tuna.js", "launch", "--nproc_per_node", "2", "--master_port", "29612", "tuna", "train", ...flags(out, 1), "--ddp_timeout", "30"], { cwd: root, encoding: "utf8", timeout: 120_000 });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /GPU 1 does not exist: the driver sees 1 GPU .*local rank 1 .*TUNA_COLLECTIVE=host/);
  assert.ok(Date.now() - started < 90_000);
});
