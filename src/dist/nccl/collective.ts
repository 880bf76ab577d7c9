// The Collective over NCCL, for ranks on GPUs. The interface takes host buffers: each call stages them in
// device memory, enqueues the NCCL call on the device's stream and waits for it without blocking Node's event
// loop (cuStreamQuery and ncclCommGetAsyncError polled with a growing pause), so heartbeats, the store and
// signals keep working. An asynchronous NCCL error, a timeout or abort() ends the communicator with
// ncclCommAbort and fails the call (and every later one) with NCCL's own words. NCCL sums in float32 in its
// ring order, so results may differ from the host transport's rank-order float64 sums in the last bits.
import { TunaError } from "../../util/errors.ts";
import type { CudaDevice, DevicePtr } from "../../backend/cuda/types.ts";
import { bindAll, loadLibrary, toHandle, toNumber } from "../../backend/cuda/driver.ts";
import type { Collective } from "../collective.ts";
import { NCCL_FLOAT32, NCCL_IN_PROGRESS, NCCL_SUCCESS, NCCL_SUM, NCCL_UINT8, NCCL_UNIQUE_ID_BYTES, commHandle, type NcclLibrary } from "./library.ts";

export interface NcclCollectiveOptions {
  nccl: NcclLibrary;
  device: CudaDevice;
  /** True once all work enqueued on the device's stream has finished (cuStreamQuery). */
  streamIdle: () => boolean;
  rank: number;
  worldSize: number;
  /** Rank 0's ncclGetUniqueId, shared through the rendezvous store. */
  uniqueId: Uint8Array;
  /** Bound on initialisation and on every collective. */
  timeoutMs: number;
  /** With it, the collective also works on device memory on its own stream (gradient buckets overlap the backward). */
  streams?: StreamApi;
}

const CUDA_ERROR_NOT_READY = 600;

/** A cuStreamQuery / cuEventQuery answer: finished, not yet, or a fault (an error naming the query and what waited). */
function finished(call: string, raw: unknown, waiting: string): boolean {
  const status = toNumber(raw, call);
  if (status === 0) return true;
  if (status === CUDA_ERROR_NOT_READY) return false;
  throw new TunaError("GPU", `${call} failed with CUresult ${status} while waiting for ${waiting} (a kernel fault on this GPU)`);
}

/** What the communication stream needs from the driver: a non-blocking stream and events between the streams. */
export interface StreamApi {
  createStream(): bigint;
  destroyStream(stream: bigint): void;
  createEvent(): bigint;
  destroyEvent(event: bigint): void;
  /** Records `event` on `stream` (null: the legacy default stream, where the CUDA backend computes). */
  record(event: bigint, stream: bigint | null): void;
  /** `stream` (null: the legacy default stream) waits for `event`. */
  wait(stream: bigint | null, event: bigint): void;
  /** Whether the work before `event` has completed. */
  done(event: bigint): boolean;
}

const CU_STREAM_NON_BLOCKING = 1;
const CU_EVENT_DISABLE_TIMING = 2;

export function driverStreams(driverPath: string): StreamApi {
  const api = bindAll(loadLibrary(driverPath), driverPath, {
    cuStreamCreate: "int cuStreamCreate(_Out_ void **phStream, unsigned int flags)",
    cuStreamDestroy: "int cuStreamDestroy_v2(void *hStream)",
    cuStreamWaitEvent: "int cuStreamWaitEvent(void *hStream, void *hEvent, unsigned int flags)",
    cuEventCreate: "int cuEventCreate(_Out_ void **phEvent, unsigned int flags)",
    cuEventRecord: "int cuEventRecord(void *hEvent, void *hStream)",
    cuEventQuery: "int cuEventQuery(void *hEvent)",
    cuEventDestroy: "int cuEventDestroy_v2(void *hEvent)",
  });
  const check = (call: string, status: unknown): void => {
    const code = toNumber(status, call);
    if (code !== 0) throw new TunaError("GPU", `${call} failed with CUresult ${code} (the communication stream of the NCCL collective)`);
  };
  return {
    createStream() {
      const out: unknown[] = [null];
      check("cuStreamCreate", api.cuStreamCreate(out, CU_STREAM_NON_BLOCKING));
      return toHandle(out[0], "cuStreamCreate");
    },
    destroyStream(stream) {
      api.cuStreamDestroy(stream);
    },
    createEvent() {
      const out: unknown[] = [null];
      check("cuEventCreate", api.cuEventCreate(out, CU_EVENT_DISABLE_TIMING));
      return toHandle(out[0], "cuEventCreate");
    },
    destroyEvent(event) {
      api.cuEventDestroy(event);
    },
    record(event, stream) {
      check("cuEventRecord", api.cuEventRecord(event, stream));
    },
    wait(stream, event) {
      check("cuStreamWaitEvent", api.cuStreamWaitEvent(stream, event, 0));
    },
    done(event) {
      return finished("cuEventQuery", api.cuEventQuery(event), "gradient buckets");
    },
  };
}

/** cuStreamQuery on the legacy default stream (the one the CUDA backend enqueues on). */
export function legacyStreamIdle(driverPath: string): () => boolean {
  const api = bindAll(loadLibrary(driverPath), driverPath, { cuStreamQuery: "int cuStreamQuery(void *hStream)" });
  return () => finished("cuStreamQuery", api.cuStreamQuery(null), "an NCCL collective");
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => (ms === 0 ? setImmediate(resolve) : setTimeout(resolve, ms)));
}

export async function createNcclCollective(o: NcclCollectiveOptions): Promise<Collective> {
  const { nccl, device, rank, worldSize, timeoutMs } = o;
  const { api } = nccl;
  if (o.uniqueId.length !== NCCL_UNIQUE_ID_BYTES) throw new TunaError("DIST", `the NCCL unique id has ${o.uniqueId.length} bytes, not ${NCCL_UNIQUE_ID_BYTES}: the ranks run different tuna versions?`);
  let broken: TunaError | undefined;
  let aborted = false;
  let comm = 0n;
  const abortedNow = (): boolean => aborted;
  const abortComm = (): void => {
    if (aborted || comm === 0n) return;
    aborted = true;
    api.ncclCommAbort(comm);
  };

  /** Polls until `done()` with NCCL reporting no error; aborts and fails on an error or at the deadline. */
  const wait = async (what: string, done: () => boolean, bound = timeoutMs): Promise<void> => {
    const started = Date.now();
    for (let polls = 0; ; polls++) {
      if (broken !== undefined) throw broken;
      const state = [0];
      nccl.check("ncclCommGetAsyncError", api.ncclCommGetAsyncError(comm, state), comm);
      const status = state[0] ?? NCCL_SUCCESS;
      if (status !== NCCL_SUCCESS && status !== NCCL_IN_PROGRESS) {
        broken = new TunaError("DIST", `rank ${rank}: ${what} failed: ${nccl.describe(status, comm)} (NCCL ${nccl.version}); another rank failed or left, or the network broke.`);
        abortComm();
        throw broken;
      }
      if (status === NCCL_SUCCESS && done()) return;
      if (Date.now() - started > bound) {
        broken = new TunaError("DIST", `rank ${rank}: ${what} did not complete within ${bound / 1000} s; a rank is missing, hung or much slower (raise ddp_timeout if a step legitimately takes longer).`);
        abortComm();
        throw broken;
      }
      // Spin briefly for short collectives, then back off to at most 2 ms between polls.
      await pause(polls < 64 ? 0 : Math.min(2, (polls - 63) / 32));
    }
  };

  const commOut: unknown[] = [null];
  const initStatus = nccl.check(
    "ncclCommInitRankConfig",
    api.ncclCommInitRankConfig(commOut, worldSize, { internal: o.uniqueId }, rank, nccl.nonBlockingConfig()),
    undefined,
    true,
  );
  comm = commHandle(commOut[0]);
  if (initStatus === NCCL_IN_PROGRESS) await wait(`NCCL initialisation of ${worldSize} ranks`, () => true);

  let seq = 0;
  /** Stages `bytes` in device memory, runs `call` on it and waits for the stream. */
  const run = async (what: string, send: ArrayBufferView, recvBytes: number, call: (sendPtr: DevicePtr, recvPtr: DevicePtr) => unknown, receive: (recvPtr: DevicePtr) => void, bound = timeoutMs): Promise<void> => {
    if (broken !== undefined) throw broken;
    seq++;
    const label = `${what} #${seq}`;
    const sendPtr = device.alloc(Math.max(send.byteLength, 4), `NCCL ${what} input`);
    const recvPtr = recvBytes === send.byteLength ? sendPtr : device.alloc(Math.max(recvBytes, 4), `NCCL ${what} output`);
    try {
      if (send.byteLength > 0) device.upload(sendPtr, send);
      nccl.check(label, call(sendPtr, recvPtr), comm, true);
      await wait(label, o.streamIdle, bound);
      receive(recvPtr);
    } finally {
      device.free(sendPtr);
      if (recvPtr !== sendPtr) device.free(recvPtr);
    }
  };

  // The communication stream and its two events, made on first use.
  let side: { stream: bigint; computed: bigint; communicated: bigint } | undefined;
  const onDevice =
    o.streams === undefined
      ? undefined
      : {
          allReduceOnDevice(ptr: bigint, count: number): void {
            if (broken !== undefined) throw broken;
            const streams = o.streams!;
            side ??= { stream: streams.createStream(), computed: streams.createEvent(), communicated: streams.createEvent() };
            seq++;
            // After what the compute stream has enqueued so far (this bucket's gradients), on the side stream.
            streams.record(side.computed, null);
            streams.wait(side.stream, side.computed);
            nccl.check(`allReduce #${seq} (gradient bucket)`, api.ncclAllReduce(ptr, ptr, count, NCCL_FLOAT32, NCCL_SUM, comm, side.stream), comm, true);
          },
          async drain(): Promise<void> {
            if (side === undefined) return;
            const streams = o.streams!;
            const c = side;
            streams.record(c.communicated, c.stream);
            streams.wait(null, c.communicated);
            await wait(`gradient buckets up to #${seq}`, () => streams.done(c.communicated));
          },
        };
  return {
    rank,
    worldSize,
    ...(onDevice === undefined ? {} : { device: onDevice }),
    async allReduceSum(data, options) {
      await run(
        "allReduce",
        data,
        data.byteLength,
        (s, r) => api.ncclAllReduce(s, r, data.length, NCCL_FLOAT32, NCCL_SUM, comm, null),
        (r) => {
          device.download(data, r);
        },
        options?.waitMs,
      );
    },
    async reduceScatterSum(data) {
      if (data.length % worldSize !== 0) throw new TunaError("INTERNAL", `reduceScatter: ${data.length} elements do not split evenly over ${worldSize} ranks`);
      const out = new Float32Array(data.length / worldSize);
      await run("reduceScatter", data, out.byteLength, (s, r) => api.ncclReduceScatter(s, r, out.length, NCCL_FLOAT32, NCCL_SUM, comm, null), (r) => {
        device.download(out, r);
      });
      return out;
    },
    async allGather(local) {
      const out = new Float32Array(local.length * worldSize);
      await run("allGather", local, out.byteLength, (s, r) => api.ncclAllGather(s, r, local.length, NCCL_FLOAT32, comm, null), (r) => {
        device.download(out, r);
      });
      return out;
    },
    async broadcast(data, root) {
      if (!Number.isInteger(root) || root < 0 || root >= worldSize) throw new TunaError("INTERNAL", `broadcast: root ${root} is not a rank of ${worldSize}`);
      await run("broadcast", data, data.byteLength, (s, r) => api.ncclBroadcast(s, r, data.byteLength, NCCL_UINT8, root, comm, null), (r) => {
        device.download(data, r);
      });
    },
    async barrier() {
      const one = Float32Array.of(1);
      await run("barrier", one, 4, (s, r) => api.ncclAllReduce(s, r, 1, NCCL_FLOAT32, NCCL_SUM, comm, null), () => undefined);
    },
    abort(reason) {
      broken ??= reason;
      abortComm();
    },

    async close() {
      const releaseSide = (): void => {
        if (side === undefined || o.streams === undefined) return;
        o.streams.destroyEvent(side.computed);
        o.streams.destroyEvent(side.communicated);
        o.streams.destroyStream(side.stream);
        side = undefined;
      };
      if (aborted || broken !== undefined) {
        abortComm();
        releaseSide();
        return;
      }
      // Finalize flushes NCCL's outstanding work (non-blocking: polled), then destroy frees the communicator.
      const status = nccl.check("ncclCommFinalize", api.ncclCommFinalize(comm), comm, true);
      if (status === NCCL_IN_PROGRESS) await wait("ncclCommFinalize", () => true).catch(() => undefined);
      broken = new TunaError("DIST", "the NCCL communicator was closed");
      if (abortedNow()) return; // the finalize wait failed and aborted the communicator
      nccl.check("ncclCommDestroy", api.ncclCommDestroy(comm), comm);
      releaseSide();
    },
  };
}
