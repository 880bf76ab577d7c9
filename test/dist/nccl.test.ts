// The NCCL collective against a stand-in libnccl (test/dist/fake-nccl.ts) and the stand-in libcuda: the bytes
// of ncclConfig_t and ncclUniqueId as NCCL receives them, non-blocking initialisation polled to completion, a
// one-rank communicator through every collective, and the failure paths (an asynchronous NCCL error, a
// collective that never completes, abort) ending the communicator with ncclCommAbort and NCCL's own words.
// The real library runs in `npm run test:gpu` on the GPU machine.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { rm } from "node:fs/promises";
import { dirname } from "node:path";
import koffi from "koffi";
import { loadNccl, type NcclLibrary } from "../../src/dist/nccl/library.ts";
import { createNcclCollective, legacyStreamIdle } from "../../src/dist/nccl/collective.ts";
import { openCudaDevice, type CudaRuntimeDevice } from "../../src/backend/cuda/device.ts";
import { TunaError } from "../../src/util/errors.ts";
import { buildFakeCuda, hasCompiler, type FakeCuda } from "../backend/cuda/fake-cuda.ts";
import { buildFakeNccl } from "./fake-nccl.ts";

const skip = hasCompiler || process.env.CI !== undefined ? false : "no C compiler (cc) on this machine";
let built: { cuda: FakeCuda; ncclPath: string; nccl: NcclLibrary; device: CudaRuntimeDevice } | undefined;

async function setup(): Promise<NonNullable<typeof built>> {
  if (built !== undefined) return built;
  const cuda = await buildFakeCuda();
  const ncclPath = await buildFakeNccl();
  const device = openCudaDevice({ kernelsDir: cuda.kernelsDir, kernelCacheDir: cuda.cacheDir, librarySearch: { env: { CUDA_HOME: cuda.dir } } });
  built = { cuda, ncclPath, nccl: loadNccl(ncclPath), device };
  return built;
}

after(async () => {
  if (built === undefined) return;
  built.device.dispose();
  await rm(built.cuda.dir, { recursive: true, force: true });
  await rm(dirname(built.ncclPath), { recursive: true, force: true });
});

const state = (path: string): ((what: number) => number) => {
  const f = koffi.load(path).func("int fakeNcclState(int what)");
  return (what) => f(what) as number;
};
const steer = (path: string): ((what: number, value: number) => void) => {
  const f = koffi.load(path).func("void fakeNcclSet(int what, int value)");
  return (what, value) => {
    f(what, value);
  };
};

void test("NCCL: the version; a 1-rank communicator initialised non-blocking, with the config and unique id bytes NCCL expects", { skip }, async () => {
  const { nccl, ncclPath, device, cuda } = await setup();
  assert.equal(nccl.version, "2.28.3");
  const id = nccl.newUniqueId();
  assert.equal(id.length, 128);
  assert.equal(id[5], 36, "ncclGetUniqueId's bytes (i * 7 + 1)");
  const c = await createNcclCollective({ nccl, device, streamIdle: legacyStreamIdle(cuda.cudaPath), rank: 0, worldSize: 1, uniqueId: id, timeoutMs: 5000 });
  const s = state(ncclPath);
  assert.equal(s(3), 0, "blocking = 0");
  assert.equal(s(4) >>> 0, 0xcafebeef, "magic");
  assert.equal(s(5), 21700, "the layout's version");
  assert.equal(s(6), 48, "sizeof the 2.17 ncclConfig_t");
  assert.equal(s(8), -2147483648, "splitShare left at NCCL_CONFIG_UNDEF_INT");
  assert.equal(s(7), id.reduce((a, b) => a + b, 0), "the unique id arrived by value, all 128 bytes");

  const data = Float32Array.from({ length: 10 }, (_, i) => i * 0.5 - 2);
  const reduced = data.slice();
  await c.allReduceSum(reduced);
  assert.deepEqual([...reduced], [...data], "a world of one sums to itself");
  assert.deepEqual([...(await c.reduceScatterSum(data))], [...data]);
  assert.deepEqual([...(await c.allGather(data.subarray(0, 3)))], [...data.subarray(0, 3)]);
  const bytes = new Uint8Array([1, 2, 3, 250]);
  await c.broadcast(bytes, 0);
  assert.deepEqual([...bytes], [1, 2, 3, 250]);
  await c.barrier();
  const before = [s(1), s(2)];
  await c.close();
  assert.deepEqual([s(1), s(2)], [before[0]! + 1, before[1]! + 1], "finalized and destroyed");
});

void test("NCCL: an asynchronous error ends the communicator with ncclCommAbort and fails with NCCL's words, now and later", { skip }, async () => {
  const { nccl, ncclPath, device, cuda } = await setup();
  const c = await createNcclCollective({ nccl, device, streamIdle: legacyStreamIdle(cuda.cudaPath), rank: 0, worldSize: 1, uniqueId: nccl.newUniqueId(), timeoutMs: 5000 });
  const aborts = state(ncclPath)(0);
  steer(ncclPath)(1, 0); // the next collective's asynchronous error: ncclRemoteError
  const failed = (e: unknown): boolean => e instanceof TunaError && e.code === "DIST" && /allReduce #1 failed: ncclRemoteError: remote process exited or there was a network error \(fake: peer rank 1 vanished\) \(NCCL 2\.28\.3\)/.test(e.message);
  await assert.rejects(c.allReduceSum(new Float32Array(4)), failed);
  assert.equal(state(ncclPath)(0), aborts + 1, "ncclCommAbort called once");
  await assert.rejects(c.barrier(), failed, "later calls fail with the same reason");
  await c.close();
  assert.equal(state(ncclPath)(0), aborts + 1, "no second abort");
});

void test("NCCL: a collective that never completes is aborted at the bound, naming it; abort() from outside ends a waiting call at once", { skip }, async () => {
  const { nccl, ncclPath, device } = await setup();
  const hung = await createNcclCollective({ nccl, device, streamIdle: () => false, rank: 0, worldSize: 1, uniqueId: nccl.newUniqueId(), timeoutMs: 200 });
  const aborts = state(ncclPath)(0);
  const started = Date.now();
  await assert.rejects(hung.allGather(new Float32Array(2)), (e: unknown) => e instanceof TunaError && e.code === "DIST" && /allGather #1 did not complete within 0\.2 s/.test(e.message));
  assert.ok(Date.now() - started < 2000);
  assert.equal(state(ncclPath)(0), aborts + 1);

  const waiting = await createNcclCollective({ nccl, device, streamIdle: () => false, rank: 0, worldSize: 1, uniqueId: nccl.newUniqueId(), timeoutMs: 60_000 });
  const call = waiting.allReduceSum(new Float32Array(2));
  setTimeout(() => {
    waiting.abort(new TunaError("DIST", "rank 1 on host-b has not answered for 61 s (heartbeat)"));
  }, 50);
  await assert.rejects(call, /rank 1 on host-b has not answered/);
  assert.equal(state(ncclPath)(0), aborts + 2);
});

void test("NCCL: initialisation that NCCL refuses, and an NCCL too old for non-blocking communicators, are clear errors", { skip }, async () => {
  const { nccl, ncclPath, device, cuda } = await setup();
  await assert.rejects(
    createNcclCollective({ nccl, device, streamIdle: legacyStreamIdle(cuda.cudaPath), rank: 3, worldSize: 2, uniqueId: nccl.newUniqueId(), timeoutMs: 1000 }),
    (e: unknown) => e instanceof TunaError && e.code === "DIST" && /ncclCommInitRankConfig failed: ncclInvalidArgument: invalid argument/.test(e.message),
  );
  await assert.rejects(createNcclCollective({ nccl, device, streamIdle: () => true, rank: 0, worldSize: 1, uniqueId: new Uint8Array(16), timeoutMs: 1000 }), /unique id has 16 bytes, not 128/);
  steer(ncclPath)(2, 21500);
  try {
    assert.throws(() => loadNccl(ncclPath), (e: unknown) => e instanceof TunaError && e.code === "GPU" && /NCCL 2\.15\.0 at .* is too old: tuna needs NCCL 2\.17\.0 or newer/.test(e.message));
  } finally {
    steer(ncclPath)(2, 22803);
  }
});

void test("NCCL on a communication stream: bucket all-reduces go on a non-blocking stream after an event of the compute stream; drain joins them back; close releases the stream", { skip }, async () => {
  const { nccl, ncclPath, device, cuda } = await setup();
  const { driverStreams } = await import("../../src/dist/nccl/collective.ts");
  const streamsLive = koffi.load(cuda.cudaPath).func("int fakeCudaStreams()");
  const reduces = koffi.load(ncclPath).func("int fakeNcclReduces()");
  const reduceAt = koffi.load(ncclPath).func("long long fakeNcclReduce(int i, int what)");
  koffi.load(ncclPath).func("void fakeNcclResetReduces()")();
  const c = await createNcclCollective({ nccl, device, streamIdle: legacyStreamIdle(cuda.cudaPath), rank: 0, worldSize: 1, uniqueId: nccl.newUniqueId(), timeoutMs: 5000, streams: driverStreams(cuda.cudaPath) });
  assert.ok(c.device !== undefined);
  const ptr = device.alloc(64 * 4, "grads");
  const values = Float32Array.from({ length: 64 }, (_, i) => i);
  device.upload(ptr, values);
  c.device.allReduceOnDevice(ptr + 32n * 4n, 32);
  c.device.allReduceOnDevice(ptr, 32);
  await c.device.drain();
  assert.equal(reduces(), 2);
  assert.deepEqual([Number(reduceAt(0, 0)), Number(reduceAt(1, 0))], [32, 32]);
  const stream = Number(reduceAt(0, 1));
  assert.ok(stream > 0x5000, `on the communication stream (${stream.toString(16)}), not the default one`);
  assert.equal(streamsLive(), 1);
  const back = new Float32Array(64);
  device.download(back, ptr);
  assert.deepEqual(back, values, "a world of one: in place, unchanged");
  device.free(ptr);
  await c.close();
  assert.equal(streamsLive(), 0, "the stream is released with the communicator");
});

void test("data parallelism uses the device collective when there is one: each bucket's device address range, in the canonical order", async () => {
  const { createCpuBackend } = await import("../../src/backend/cpu/index.ts");
  const { createTrainableBuffers } = await import("../../src/model/trainable.ts");
  const { createDataParallel } = await import("../../src/train/data-parallel.ts");
  const cpu = createCpuBackend();
  const t = createTrainableBuffers(cpu, [
    { name: "model.embed_tokens.rows", shape: [8] },
    { name: "model.layers.0.q.lora_A", shape: [16] },
    { name: "model.layers.1.q.lora_A", shape: [16] },
  ]);
  const calls: [bigint, number][] = [];
  let drained = 0;
  const collective = {
    rank: 0,
    worldSize: 2,
    device: {
      allReduceOnDevice: (ptr: bigint, count: number) => {
        calls.push([ptr, count]);
      },
      drain: () => {
        drained++;
        return Promise.resolve();
      },
    },
    allReduceSum: () => Promise.reject(new Error("the host path was used")),
    reduceScatterSum: () => Promise.reject(new Error("unused")),
    allGather: () => Promise.reject(new Error("unused")),
    broadcast: () => Promise.reject(new Error("unused")),
    barrier: () => Promise.resolve(),
    abort: () => undefined,
    close: () => Promise.resolve(),
  };
  const be = { ...cpu, pointerOf: () => 0x10000n };
  const run = createDataParallel(be, t, collective, 0, (16 * 4) / 2 ** 20).startBuckets(t.grads)!;
  run.layerDone(1);
  assert.deepEqual(calls, [[0x10000n + 24n * 4n, 16]], "layer 1's bucket as soon as layer 1 is done");
  run.layerDone(0);
  assert.equal(calls.length, 2, "layer 0's at once too");
  await run.finish();
  assert.deepEqual(calls, [[0x10000n + 96n, 16], [0x10000n + 32n, 16], [0x10000n, 8]]);
  assert.equal(drained, 1);
});
