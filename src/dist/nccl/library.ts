// NCCL (libnccl.so.2) bound through koffi: the calls tuna makes, every status checked and reported in NCCL's own
// words (ncclGetErrorString, and ncclGetLastError's detail). Communicators are created non-blocking
// (ncclConfig_t.blocking = 0) and polled with ncclCommGetAsyncError, so Node's event loop never waits inside
// NCCL. ncclUniqueId (128 bytes) is passed by value as NCCL's API takes it.
//
// ncclConfig_t is versioned by its own size and version fields (NCCL copies only what the caller's version
// has), so tuna passes the NCCL 2.17 layout: size, magic 0xcafebeef, version, blocking, cgaClusterSize,
// minCTAs, maxCTAs, netName, splitShare, unset fields at NCCL_CONFIG_UNDEF_INT (INT_MIN) / NULL.
import koffi from "koffi";
import { bindAll, loadLibrary, toHandle, toNumber, type NativeFunction } from "../../backend/cuda/driver.ts";
import { TunaError } from "../../util/errors.ts";

export const NCCL_UNIQUE_ID_BYTES = 128;

let uniqueIdDefined = false;
/** koffi registers type names process-wide: define ncclUniqueId once, before binding the calls that use it. */
function defineUniqueIdType(): void {
  if (uniqueIdDefined) return;
  koffi.struct("ncclUniqueId", { internal: koffi.array("uint8_t", NCCL_UNIQUE_ID_BYTES, "Typed") });
  uniqueIdDefined = true;
}

export const NCCL_PROTOTYPES = {
  ncclGetVersion: "int ncclGetVersion(_Out_ int *version)",
  ncclGetErrorString: "const char *ncclGetErrorString(int result)",
  ncclGetLastError: "const char *ncclGetLastError(void *comm)",
  ncclGetUniqueId: "int ncclGetUniqueId(void *uniqueId)",
  ncclCommInitRankConfig: "int ncclCommInitRankConfig(_Out_ void **comm, int nranks, ncclUniqueId commId, int rank, void *config)",
  ncclCommGetAsyncError: "int ncclCommGetAsyncError(void *comm, _Out_ int *asyncError)",
  ncclCommFinalize: "int ncclCommFinalize(void *comm)",
  ncclCommDestroy: "int ncclCommDestroy(void *comm)",
  ncclCommAbort: "int ncclCommAbort(void *comm)",
  ncclAllReduce: "int ncclAllReduce(uint64_t sendbuff, uint64_t recvbuff, size_t count, int datatype, int op, void *comm, void *stream)",
  ncclReduceScatter: "int ncclReduceScatter(uint64_t sendbuff, uint64_t recvbuff, size_t recvcount, int datatype, int op, void *comm, void *stream)",
  ncclAllGather: "int ncclAllGather(uint64_t sendbuff, uint64_t recvbuff, size_t sendcount, int datatype, void *comm, void *stream)",
  ncclBroadcast: "int ncclBroadcast(uint64_t sendbuff, uint64_t recvbuff, size_t count, int datatype, int root, void *comm, void *stream)",
} as const;

export const NCCL_SUCCESS = 0;
export const NCCL_IN_PROGRESS = 7;
export const NCCL_UINT8 = 1;
export const NCCL_FLOAT32 = 7;
export const NCCL_SUM = 0;

const RESULT_NAMES = ["ncclSuccess", "ncclUnhandledCudaError", "ncclSystemError", "ncclInternalError", "ncclInvalidArgument", "ncclInvalidUsage", "ncclRemoteError", "ncclInProgress"];

/** The oldest NCCL with non-blocking communicators and ncclCommFinalize. */
export const MIN_NCCL_VERSION = 21700;

export interface NcclLibrary {
  readonly path: string;
  /** 22803 for 2.28.3. */
  readonly code: number;
  readonly version: string;
  readonly api: { [K in keyof typeof NCCL_PROTOTYPES]: NativeFunction };
  /** "ncclRemoteError: remote process exited or there was a network error (<last error detail>)". */
  describe(status: number, comm?: bigint): string;
  /** A DIST error naming the call and NCCL's words, unless the status is ncclSuccess (or, if allowed, in progress). */
  check(call: string, status: unknown, comm?: bigint, allowInProgress?: boolean): number;
  newUniqueId(): Uint8Array;
  /** The NCCL 2.17 ncclConfig_t for a non-blocking communicator. */
  nonBlockingConfig(): Buffer;
}

/** "2.28.3" from ncclGetVersion's 22803 (or 2708 -> "2.7.8" below 2.9). */
export function ncclVersionText(code: number): string {
  return code >= 10000 ? `${Math.floor(code / 10000)}.${Math.floor(code / 100) % 100}.${code % 100}` : `${Math.floor(code / 1000)}.${Math.floor(code / 100) % 10}.${code % 100}`;
}

export function loadNccl(path: string): NcclLibrary {
  defineUniqueIdType();
  const api = bindAll(loadLibrary(path), path, NCCL_PROTOTYPES);
  const versionOut = [0];
  const status = toNumber(api.ncclGetVersion(versionOut), "ncclGetVersion");
  if (status !== NCCL_SUCCESS) throw new TunaError("GPU", `ncclGetVersion failed with ${status} (NCCL at ${path})`);
  const code = versionOut[0] ?? 0;
  const version = ncclVersionText(code);
  if (code < MIN_NCCL_VERSION) {
    throw new TunaError("GPU", `NCCL ${version} at ${path} is too old: tuna needs NCCL ${ncclVersionText(MIN_NCCL_VERSION)} or newer (non-blocking communicators). Install a newer NCCL (e.g. pip install nvidia-nccl-cu12) or point LD_LIBRARY_PATH at one.`);
  }
  const describe = (result: number, comm?: bigint): string => {
    const text: unknown = api.ncclGetErrorString(result);
    const detail: unknown = comm === undefined ? null : api.ncclGetLastError(comm);
    const name = RESULT_NAMES[result] ?? `ncclResult ${result}`;
    return `${name}: ${typeof text === "string" ? text : "?"}${typeof detail === "string" && detail !== "" ? ` (${detail})` : ""}`;
  };
  return {
    path,
    code,
    version,
    api,
    describe,
    check(call, raw, comm, allowInProgress = false) {
      const result = toNumber(raw, call);
      if (result === NCCL_SUCCESS || (allowInProgress && result === NCCL_IN_PROGRESS)) return result;
      throw new TunaError("DIST", `${call} failed: ${describe(result, comm)} (NCCL ${version})`);
    },
    newUniqueId() {
      const id = Buffer.alloc(NCCL_UNIQUE_ID_BYTES);
      const result = toNumber(api.ncclGetUniqueId(id), "ncclGetUniqueId");
      if (result !== NCCL_SUCCESS) throw new TunaError("DIST", `ncclGetUniqueId failed: ${describe(result)} (NCCL ${version}); NCCL could not find a network interface (see NCCL_SOCKET_IFNAME).`);
      return new Uint8Array(id);
    },
    nonBlockingConfig() {
      const config = Buffer.alloc(48);
      const UNDEF_INT = -2147483648;
      config.writeBigUInt64LE(48n, 0); // size
      config.writeUInt32LE(0xcafebeef, 8); // magic
      config.writeUInt32LE(MIN_NCCL_VERSION, 12); // version of this layout
      config.writeInt32LE(0, 16); // blocking = 0
      config.writeInt32LE(UNDEF_INT, 20); // cgaClusterSize
      config.writeInt32LE(UNDEF_INT, 24); // minCTAs
      config.writeInt32LE(UNDEF_INT, 28); // maxCTAs
      config.writeBigUInt64LE(0n, 32); // netName = NULL
      config.writeInt32LE(UNDEF_INT, 40); // splitShare
      return config;
    },
  };
}

/** A communicator handle from ncclCommInitRankConfig's out parameter. */
export function commHandle(value: unknown): bigint {
  return toHandle(value, "ncclCommInitRankConfig");
}
