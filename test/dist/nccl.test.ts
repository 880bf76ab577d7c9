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
