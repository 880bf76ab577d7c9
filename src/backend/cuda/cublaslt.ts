// cuBLASLt bound through koffi, and tuna's row-major GEMM (GemmCall) mapped onto its column-major matmul:
// f32 accumulation (no TF32), descriptors and the heuristic's algorithm cached per shape, dtype, transpose and alignment.
import { TunaError } from "../../util/errors.ts";
import { bindAll, formatPtr, loadLibrary, toHandle, toNumber, type NativeFunction } from "./driver.ts";
import type { DevicePtr, DeviceTensor, GemmCall, GemmDtype } from "./types.ts";

export const CUBLASLT_PROTOTYPES = {
  cublasLtCreate: "int cublasLtCreate(_Out_ void **lightHandle)",
  cublasLtDestroy: "int cublasLtDestroy(void *lightHandle)",
  cublasLtMatmulDescCreate: "int cublasLtMatmulDescCreate(_Out_ void **matmulDesc, int computeType, int scaleType)",
  cublasLtMatmulDescSetAttribute: "int cublasLtMatmulDescSetAttribute(void *matmulDesc, int attr, const void *buf, size_t sizeInBytes)",
  cublasLtMatmulDescDestroy: "int cublasLtMatmulDescDestroy(void *matmulDesc)",
  cublasLtMatrixLayoutCreate: "int cublasLtMatrixLayoutCreate(_Out_ void **matLayout, int type, uint64_t rows, uint64_t cols, int64_t ld)",
  cublasLtMatrixLayoutDestroy: "int cublasLtMatrixLayoutDestroy(void *matLayout)",
  cublasLtMatmulPreferenceCreate: "int cublasLtMatmulPreferenceCreate(_Out_ void **pref)",
  cublasLtMatmulPreferenceSetAttribute: "int cublasLtMatmulPreferenceSetAttribute(void *pref, int attr, const void *buf, size_t sizeInBytes)",
  cublasLtMatmulPreferenceDestroy: "int cublasLtMatmulPreferenceDestroy(void *pref)",
  cublasLtMatmulAlgoGetHeuristic:
    "int cublasLtMatmulAlgoGetHeuristic(void *lightHandle, void *operationDesc, void *Adesc, void *Bdesc, void *Cdesc, void *Ddesc, " +
    "void *preference, int requestedAlgoCount, void *heuristicResultsArray, _Out_ int *returnAlgoCount)",
  // Device addresses are uint64_t here (they travel in the same registers as pointers on x86-64 and arm64).
  cublasLtMatmul:
    "int cublasLtMatmul(void *lightHandle, void *computeDesc, const void *alpha, uint64_t A, void *Adesc, uint64_t B, void *Bdesc, " +
    "const void *beta, uint64_t C, void *Cdesc, uint64_t D, void *Ddesc, const void *algo, uint64_t workspace, size_t workspaceSizeInBytes, void *stream)",
} as const;

const CUBLAS_STATUS_SUCCESS = 0;
const CUBLAS_COMPUTE_32F = 68;
const CUDA_R_32F = 0;
const CUDA_TYPE: Readonly<Record<GemmDtype, number>> = { f32: 0, f16: 2, bf16: 14 };
const CUBLASLT_MATMUL_DESC_TRANSA = 3;
const CUBLASLT_MATMUL_DESC_TRANSB = 4;
const CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1;
const CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5;
const CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6;
const CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7;
const CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8;
/** sizeof(cublasLtMatmulHeuristicResult_t): a 64-byte algo, size_t workspaceSize, int state, float waves, int[4]. */
export const HEURISTIC_RESULT_BYTES = 96;
const HEURISTIC_WORKSPACE_OFFSET = 64;
const HEURISTIC_STATE_OFFSET = 72;
/** The heuristic assumes 256-byte aligned operands unless told otherwise. */
const MAX_ALIGNMENT = 256;

export const GEMM_WORKSPACE_BYTES = 32 * 1024 * 1024;

/** cuBLAS's op for one operand: 0 = N (as stored), 1 = T (transposed). */
export type CublasOp = 0 | 1;

/** One column-major matrix as cuBLASLt's layout describes it: the stored matrix, before its op. */
export interface ColumnMajorLayout {
  rows: number;
  cols: number;
  ld: number;
}

/**
 * A column-major GEMM, D (m, n) = op(first) (m, k) @ op(second) (k, n) + beta * D, that computes a row-major GemmCall:
 * a row-major matrix is its transpose in column-major, so D_rm = op(A) op(B) becomes D_rm^T = op(B)^T op(A)^T,
 * with B's memory as the first operand, A's as the second, and m, n swapped.
 */
export interface ColumnMajorGemm {
  m: number;
  n: number;
  k: number;
  /** Row-major B's memory. */
  first: ColumnMajorLayout & { op: CublasOp };
  /** Row-major A's memory. */
  second: ColumnMajorLayout & { op: CublasOp };
  d: ColumnMajorLayout;
}

export function columnMajorGemm(m: number, n: number, k: number, transA: boolean, transB: boolean): ColumnMajorGemm {
  return {
    m: n,
    n: m,
    k,
    // B stored (K, N) row-major is B^T (N, K) column-major: already op(B)^T. Stored (N, K) it is (K, N) and needs T.
    first: transB ? { op: 1, rows: k, cols: n, ld: k } : { op: 0, rows: n, cols: k, ld: n },
    // A stored (M, K) row-major is A^T (K, M) column-major: already op(A)^T. Stored (K, M) it is (M, K) and needs T.
    second: transA ? { op: 1, rows: m, cols: k, ld: m } : { op: 0, rows: k, cols: m, ld: k },
    d: { rows: n, cols: m, ld: n },
  };
}

function describeTensor(name: string, t: DeviceTensor): string {
  return `${name} (${t.dtype}, shape [${t.shape.join(", ")}], ${t.size} elements)`;
}

/** Throws TunaError("INTERNAL") for a call cuBLASLt must not see: sizes, element counts, dtypes, scalars. */
export function validateGemm(call: GemmCall): void {
  const { m, n, k, a, b, d } = call;
  const where = `gemm M=${m} N=${n} K=${k} transA=${call.transA} transB=${call.transB}`;
  for (const [name, v] of [["M", m], ["N", n], ["K", k]] as const) {
    if (!Number.isSafeInteger(v) || v < 1) throw new TunaError("INTERNAL", `${where}: ${name} must be a positive integer`);
  }
  const expect = (name: string, t: DeviceTensor, elements: number, stored: string): void => {
    if (t.size !== elements) throw new TunaError("INTERNAL", `${where}: ${describeTensor(name, t)} should hold ${stored} = ${elements} elements`);
    if (t.ptr === 0n) throw new TunaError("INTERNAL", `${where}: ${name} has a null device address`);
  };
  expect("A", a, m * k, call.transA ? "(K, M)" : "(M, K)");
  expect("B", b, k * n, call.transB ? "(N, K)" : "(K, N)");
  expect("D", d, m * n, "(M, N)");
  if (a.dtype !== b.dtype || !(a.dtype in CUDA_TYPE)) {
    throw new TunaError("INTERNAL", `${where}: A is ${a.dtype} and B is ${b.dtype}; A and B must share one dtype of f32, bf16 or f16`);
  }
  if (d.dtype !== a.dtype && d.dtype !== "f32") {
    throw new TunaError("INTERNAL", `${where}: D is ${d.dtype} but A and B are ${a.dtype}; D must be ${a.dtype} or f32`);
  }
  if (!Number.isFinite(call.alpha)) throw new TunaError("INTERNAL", `${where}: alpha is ${call.alpha}`);
  // beta is typed 0 | 1, but callers compute it.
  const beta: number = call.beta;
  if (beta !== 0 && beta !== 1) throw new TunaError("INTERNAL", `${where}: beta must be 0 or 1, got ${beta}`);
}

/** The largest power of two (at most 256) dividing the address: what the heuristic may assume. */
export function addressAlignment(ptr: DevicePtr): number {
  let alignment = 1;
  while (alignment < MAX_ALIGNMENT && (ptr & BigInt(alignment * 2 - 1)) === 0n) alignment *= 2;
  return alignment;
}

interface GemmPlan {
  desc: bigint;
  first: bigint;
  second: bigint;
  d: bigint;
  /** The heuristic's result; its first 64 bytes are the cublasLtMatmulAlgo_t passed to cublasLtMatmul. */
  algo: Buffer;
}

export interface CublasLt {
  readonly path: string;
  gemm(call: GemmCall): void;
  /** Destroys every cached descriptor and the handle (the workspace belongs to the caller). */
  dispose(): void;
}

export interface CublasLtOptions {
  path: string;
  /** A device buffer of GEMM_WORKSPACE_BYTES or more. */
  workspace: DevicePtr;
  workspaceBytes: number;
}

export function openCublasLt(options: CublasLtOptions): CublasLt {
  const { path, workspace, workspaceBytes } = options;
  const lib = loadLibrary(path);
  const api = bindAll(lib, path, CUBLASLT_PROTOTYPES);
  let statusString: NativeFunction | undefined;
  try {
    statusString = lib.func("const char *cublasLtGetStatusString(int status)");
  } catch {
    statusString = undefined; // older cuBLASLt: the number alone
  }
  const check = (call: string, status: unknown): void => {
    const code = toNumber(status, call);
    if (code === CUBLAS_STATUS_SUCCESS) return;
    const text: unknown = statusString?.(code);
    throw new TunaError("GPU", `${call} failed: cublasStatus ${code}${typeof text === "string" ? ` (${text})` : ""}`);
  };
  const create = (call: string, fn: NativeFunction, ...args: unknown[]): bigint => {
    const out: unknown[] = [null];
    check(call, fn(out, ...args));
    return toHandle(out[0], call);
  };

  const handle = create("cublasLtCreate", api.cublasLtCreate);
  const plans = new Map<string, GemmPlan>();
  const alpha = new Float32Array(1);
  const beta = new Float32Array(1);
  const int32 = new Int32Array(1);
  const uint32 = new Uint32Array(1);
  const uint64 = new BigUint64Array(1);

  const destroyPlan = (plan: Partial<GemmPlan>): void => {
    // Ignoring statuses: this runs on teardown or after a failure that is the error being reported.
    if (plan.first !== undefined) api.cublasLtMatrixLayoutDestroy(plan.first);
    if (plan.second !== undefined) api.cublasLtMatrixLayoutDestroy(plan.second);
    if (plan.d !== undefined) api.cublasLtMatrixLayoutDestroy(plan.d);
    if (plan.desc !== undefined) api.cublasLtMatmulDescDestroy(plan.desc);
  };

  const makePlan = (call: GemmCall, where: string): GemmPlan => {
    const g = columnMajorGemm(call.m, call.n, call.k, call.transA, call.transB);
    const inType = CUDA_TYPE[call.a.dtype as GemmDtype];
    const outType = CUDA_TYPE[call.d.dtype as GemmDtype];
    const plan: Partial<GemmPlan> = {};
    let pref: bigint | undefined;
    try {
      plan.desc = create(`cublasLtMatmulDescCreate (${where})`, api.cublasLtMatmulDescCreate, CUBLAS_COMPUTE_32F, CUDA_R_32F);
      for (const [attr, op] of [[CUBLASLT_MATMUL_DESC_TRANSA, g.first.op], [CUBLASLT_MATMUL_DESC_TRANSB, g.second.op]] as const) {
        int32[0] = op;
        check(`cublasLtMatmulDescSetAttribute(${attr === CUBLASLT_MATMUL_DESC_TRANSA ? "TRANSA" : "TRANSB"}, ${where})`, api.cublasLtMatmulDescSetAttribute(plan.desc, attr, int32, 4));
      }
      const layout = (l: { rows: number; cols: number; ld: number }, type: number, name: string): bigint =>
        create(`cublasLtMatrixLayoutCreate(${name} ${l.rows}x${l.cols} ld ${l.ld}, ${where})`, api.cublasLtMatrixLayoutCreate, type, l.rows, l.cols, l.ld);
      plan.first = layout(g.first, inType, "B");
      plan.second = layout(g.second, inType, "A");
      plan.d = layout(g.d, outType, "D");

      pref = create("cublasLtMatmulPreferenceCreate", api.cublasLtMatmulPreferenceCreate);
      uint64[0] = BigInt(workspaceBytes);
      check("cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)", api.cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64, 8));
      // cuBLASLt's A is our B and its B our A; C and D are both our D.
      const alignments: [number, DevicePtr][] = [
        [CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, call.b.ptr],
        [CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, call.a.ptr],
        [CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, call.d.ptr],
        [CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, call.d.ptr],
      ];
      for (const [attr, ptr] of alignments) {
        uint32[0] = addressAlignment(ptr);
        check(`cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT ${attr})`, api.cublasLtMatmulPreferenceSetAttribute(pref, attr, uint32, 4));
      }
      const results = Buffer.alloc(HEURISTIC_RESULT_BYTES);
      const count = [0];
      check(
        `cublasLtMatmulAlgoGetHeuristic(${where})`,
        api.cublasLtMatmulAlgoGetHeuristic(handle, plan.desc, plan.first, plan.second, plan.d, plan.d, pref, 1, results, count),
      );
      const state = results.readInt32LE(HEURISTIC_STATE_OFFSET);
      if ((count[0] ?? 0) < 1 || state !== CUBLAS_STATUS_SUCCESS) {
        throw new TunaError("GPU", `cuBLASLt has no algorithm for ${where} (heuristic returned ${count[0] ?? 0} results, state ${state})`);
      }
      const needed = Number(results.readBigUInt64LE(HEURISTIC_WORKSPACE_OFFSET));
      if (needed > workspaceBytes) throw new TunaError("GPU", `cuBLASLt's algorithm for ${where} wants ${needed} bytes of workspace, more than ${workspaceBytes}`);
      return { desc: plan.desc, first: plan.first, second: plan.second, d: plan.d, algo: results };
    } catch (e) {
      destroyPlan(plan);
      throw e;
    } finally {
      if (pref !== undefined) api.cublasLtMatmulPreferenceDestroy(pref);
    }
  };

  return {
    path,
    gemm(call) {
      validateGemm(call);
      const key =
        `${call.m},${call.n},${call.k},${call.a.dtype},${call.d.dtype},${call.transA ? "T" : "N"}${call.transB ? "T" : "N"},` +
        `${addressAlignment(call.a.ptr)},${addressAlignment(call.b.ptr)},${addressAlignment(call.d.ptr)}`;
      let plan = plans.get(key);
      const where = () =>
        `M=${call.m} N=${call.n} K=${call.k} ${call.a.dtype}->${call.d.dtype} transA=${call.transA} transB=${call.transB}`;
      if (plan === undefined) {
        plan = makePlan(call, where());
        plans.set(key, plan);
      }
      alpha[0] = call.alpha;
      beta[0] = call.beta;
      const status: unknown = api.cublasLtMatmul(
        handle, plan.desc, alpha, call.b.ptr, plan.first, call.a.ptr, plan.second,
        beta, call.d.ptr, plan.d, call.d.ptr, plan.d, plan.algo, workspace, workspaceBytes, null,
      );
      if (status !== CUBLAS_STATUS_SUCCESS) {
        check(`cublasLtMatmul(${where()}, A ${formatPtr(call.a.ptr)}, B ${formatPtr(call.b.ptr)}, D ${formatPtr(call.d.ptr)})`, status);
      }
    },
    dispose() {
      for (const plan of plans.values()) destroyPlan(plan);
      plans.clear();
      check("cublasLtDestroy", api.cublasLtDestroy(handle));
    },
  };
}
