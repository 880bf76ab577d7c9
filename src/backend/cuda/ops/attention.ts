// CUDA launch wrappers for causal grouped-query attention over packed documents (forward, backward) and against
// a KV cache (decode): argument checks, tile tables uploaded to scratch, the choice of kernel file and launch sizes.
import { TunaError } from "../../../util/errors.ts";
import { expectFinite, fail, sameShape } from "../../checks.ts";
import type { AttentionOptions } from "../../types.ts";
import { checkAttentionWindow, checkSoftcap } from "../../op-checks.ts";
import type { CudaDevice, CudaFunction, DevicePtr, DeviceTensor, KernelArg } from "../types.ts";
import { FLOAT_DTYPE_CODE } from "../types.ts";
import {
  ATTENTION_THREADS,
  DEFAULT_SHARED_BYTES,
  MAX_HEAD_DIM,
  attentionPath,
  backwardHeadSplits,
  backwardKernelPlan,
  buildTileTable,
  decodePlan,
  forwardKernelPlan,
  type KernelPlan,
} from "./attention-plan.ts";

interface Layout {
  n: number;
  heads: number;
  kvHeads: number;
  dim: number;
  /** The float dtype code every q/k/v-like tensor shares. */
  dt: number;
}

function text(what: string, t: DeviceTensor): string {
  return `${what} ${t.dtype}[${t.shape.join(", ")}]`;
}

function expectLike(op: string, what: string, t: DeviceTensor, likeWhat: string, like: DeviceTensor): void {
  if (t.dtype !== like.dtype || !sameShape(t.shape, like.shape)) fail(op, `${text(what, t)} must match ${text(likeWhat, like)}`);
}

/** q (N, H, D) of a float dtype; k-like tensors (rows, KV, D) of the same dtype with H a multiple of KV. */
function checkHeads(op: string, q: DeviceTensor, kName: string, k: DeviceTensor): Layout {
  const dt = FLOAT_DTYPE_CODE[q.dtype];
  if (dt === undefined) fail(op, `${text("q", q)} must be f32, bf16 or f16`);
  if (q.shape.length !== 3) fail(op, `${text("q", q)} must be (N, H, D)`);
  const [n, heads, dim] = q.shape as [number, number, number];
  if (k.dtype !== q.dtype || k.shape.length !== 3 || k.shape[2] !== dim) fail(op, `${text(kName, k)} must be (rows, KV, ${dim}) of ${q.dtype} like ${text("q", q)}`);
  const kvHeads = k.shape[1]!;
  if (kvHeads === 0 || heads % kvHeads !== 0) fail(op, `${text("q", q)} has ${heads} heads, not a multiple of the ${kvHeads} kv heads of ${text(kName, k)}`);
  if (dim > MAX_HEAD_DIM) throw new TunaError("UNSUPPORTED", `${op}: head dim ${dim} is above the ${MAX_HEAD_DIM} the CUDA attention kernels support`);
  return { n, heads, kvHeads, dim, dt };
}

/** Packed-document layout: k and v (N, KV, D), cuSeqlens i32 (S+1) whose host copy runs from 0 up to N. */
function checkPacked(op: string, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, cuSeqlens: DeviceTensor, host: Int32Array): Layout {
  const layout = checkHeads(op, q, "k", k);
  if (k.shape[0] !== layout.n) fail(op, `${text("k", k)} must have the N = ${layout.n} rows of ${text("q", q)}`);
  expectLike(op, "v", v, "k", k);
  if (cuSeqlens.dtype !== "i32" || cuSeqlens.shape.length !== 1 || cuSeqlens.shape[0] !== host.length) {
    fail(op, `${text("cuSeqlens", cuSeqlens)} must be i32 (S+1) with the ${host.length} entries of its host copy`);
  }
  const shown = `[${Array.from(host.subarray(0, 8)).join(", ")}${host.length > 8 ? ", ..." : ""}]`;
  if (host.length === 0 || host[0] !== 0 || host[host.length - 1] !== layout.n) fail(op, `cuSeqlens ${shown} must start at 0 and end at N = ${layout.n}`);
  for (let s = 1; s < host.length; s++) {
    if (host[s]! < host[s - 1]!) fail(op, `cuSeqlens ${shown} decreases at index ${s}`);
  }
  return layout;
}

function expectLse(op: string, lse: DeviceTensor, { n, heads }: Layout): void {
  if (lse.dtype !== "f32" || !sameShape(lse.shape, [n, heads])) fail(op, `${text("lse", lse)} must be f32 (N, H) = [${n}, ${heads}]`);
}

function aligned16(tensors: readonly DeviceTensor[]): boolean {
  return tensors.every((t) => t.ptr % 16n === 0n);
}

// Functions whose dynamic shared memory limit was raised, and to what.
const sharedLimits = new WeakMap<CudaFunction, number>();

function kernelFor(dev: CudaDevice, file: string, name: string, sharedBytes: number): CudaFunction {
  const fn = dev.module(file).fn(name);
  if (sharedBytes > DEFAULT_SHARED_BYTES && (sharedLimits.get(fn) ?? 0) < sharedBytes) {
    fn.setMaxDynamicSharedBytes(sharedBytes);
    sharedLimits.set(fn, sharedBytes);
  }
  return fn;
}

function launchPlan(dev: CudaDevice, plan: KernelPlan, blocks: number, args: readonly KernelArg[]): void {
  kernelFor(dev, plan.file, plan.kernel, plan.sharedBytes).launch([blocks, 1, 1], [plan.threads, 1, 1], plan.sharedBytes, args);
}

function checkGrid(op: string, blocks: number): void {
  if (blocks > 0x7fffffff) fail(op, `${blocks} blocks exceed the grid limit; split the batch`);
}

/** Uploads a tile table to scratch; the caller frees it after enqueueing its launches (stream-ordered reuse). */
function uploadTiles(dev: CudaDevice, tiles: Int32Array): DevicePtr {
  const ptr = dev.alloc(tiles.byteLength, "attention tile table");
  dev.upload(ptr, tiles);
  return ptr;
}

/** The kernels' window argument (the window, or 0 for full causal attention) and soft-cap (0 for none). */
function optionArgs(op: string, options: AttentionOptions): [KernelArg, KernelArg] {
  checkAttentionWindow(op, options.window);
  checkSoftcap(op, options.softcap);
  return [{ i32: options.window ?? 0 }, { f32: options.softcap ?? 0 }];
}

/** out (N, H, D) = softmax(scale q k^T, causal within each document, within the window if any) v; lse f32 (N, H) in natural log. */
export function attentionForward(
  dev: CudaDevice,
  out: DeviceTensor,
  lse: DeviceTensor,
  q: DeviceTensor,
  k: DeviceTensor,
  v: DeviceTensor,
  cuSeqlens: DeviceTensor,
  cuSeqlensHost: Int32Array,
  scale: number,
  options: AttentionOptions = {},
): void {
  const op = "attentionForward";
  const [window, softcap] = optionArgs(op, options);
  const layout = checkPacked(op, q, k, v, cuSeqlens, cuSeqlensHost);
  expectLike(op, "out", out, "q", q);
  expectLse(op, lse, layout);
  expectFinite(op, "scale", scale);
  if (layout.n === 0 || layout.heads === 0 || layout.dim === 0) return;
  const { heads, kvHeads, dim, dt } = layout;
  const path = attentionPath(q.dtype, dim, aligned16([out, q, k, v]), dev.arch);
  const plan = forwardKernelPlan(path, dim);
  const tiles = buildTileTable(cuSeqlensHost, plan.tileRows, "query");
  const blocks = (tiles.length / 3) * heads;
  checkGrid(op, blocks);
  const table = uploadTiles(dev, tiles);
  const scaleLog2 = { f32: scale * Math.LOG2E };
  const tensors: KernelArg[] = [{ ptr: out.ptr }, { ptr: lse.ptr }, { ptr: q.ptr }, { ptr: k.ptr }, { ptr: v.ptr }, { ptr: table }];
  const args: KernelArg[] =
    path === "mma"
      ? [...tensors, { i32: heads }, { i32: kvHeads }, scaleLog2, window, softcap]
      : [...tensors, { i32: dt }, { i32: heads }, { i32: kvHeads }, { i32: dim }, scaleLog2, window, softcap];
  launchPlan(dev, plan, blocks, args);
  dev.free(table);
}

/**
 * dq (N, H, D), dk and dv (N, KV, D), overwritten. delta = rowsum(dout * out) goes to an f32 scratch (N, H);
 * dq accumulates in an f32 scratch (N, H, D) and is scaled into dq's dtype at the end.
 */
export function attentionBackward(
  dev: CudaDevice,
  dq: DeviceTensor,
  dk: DeviceTensor,
  dv: DeviceTensor,
  dout: DeviceTensor,
  q: DeviceTensor,
  k: DeviceTensor,
  v: DeviceTensor,
  out: DeviceTensor,
  lse: DeviceTensor,
  cuSeqlens: DeviceTensor,
  cuSeqlensHost: Int32Array,
  scale: number,
  options: AttentionOptions = {},
): void {
  const op = "attentionBackward";
  const [window, softcap] = optionArgs(op, options);
  const layout = checkPacked(op, q, k, v, cuSeqlens, cuSeqlensHost);
  expectLike(op, "dq", dq, "q", q);
  expectLike(op, "dout", dout, "q", q);
  expectLike(op, "out", out, "q", q);
  expectLike(op, "dk", dk, "k", k);
  expectLike(op, "dv", dv, "k", k);
  expectLse(op, lse, layout);
  expectFinite(op, "scale", scale);
  if (layout.n === 0 || layout.heads === 0 || layout.dim === 0) return;
  const { n, heads, kvHeads, dim, dt } = layout;
  const path = attentionPath(q.dtype, dim, aligned16([dq, dk, dv, dout, q, k, v, out]), dev.arch);
  const plan = backwardKernelPlan(path, dim);
  const tiles = buildTileTable(cuSeqlensHost, plan.tileRows, "key");
  const splits = path === "mma" ? backwardHeadSplits(tiles, heads, kvHeads, dev.multiprocessorCount) : 1;
  const blocks = (tiles.length / 3) * kvHeads * splits;
  checkGrid(op, blocks);

  const rows = n * heads;
  const delta = dev.alloc(rows * 4, "attention backward delta (N, H) f32");
  const dqBytes = rows * dim * 4;
  const dqAcc = dev.alloc(dqBytes, "attention backward dq accumulator (N, H, D) f32");
  dev.memset(dqAcc, 0, dqBytes);
  // Split heads: dk then dv (N, KV, D) f32, summed over the blocks of a (key tile, kv head) by atomics.
  const kvElements = n * kvHeads * dim;
  const dkvAcc = splits > 1 ? dev.alloc(2 * kvElements * 4, "attention backward dk, dv accumulators (2, N, KV, D) f32") : 0n;
  if (splits > 1) dev.memset(dkvAcc, 0, 2 * kvElements * 4);
  const dvAcc = splits > 1 ? dkvAcc + BigInt(kvElements * 4) : 0n;
  const table = uploadTiles(dev, tiles);
  const generic = dev.module("attention.cu");

  const warpsPerBlock = ATTENTION_THREADS / 32;
  generic
    .fn("attention_backward_delta")
    .launch([Math.ceil(rows / warpsPerBlock), 1, 1], [ATTENTION_THREADS, 1, 1], 0, [
      { ptr: delta },
      { ptr: dout.ptr },
      { ptr: out.ptr },
      { i32: dt },
      { i64: rows },
      { i32: dim },
    ]);

  const scaleLog2 = { f32: scale * Math.LOG2E };
  const tensors: KernelArg[] = [
    { ptr: dqAcc },
    ...(path === "mma" ? [{ ptr: dkvAcc }, { ptr: dvAcc }] : []),
    { ptr: dk.ptr },
    { ptr: dv.ptr },
    { ptr: q.ptr },
    { ptr: k.ptr },
    { ptr: v.ptr },
    { ptr: dout.ptr },
    { ptr: lse.ptr },
    { ptr: delta },
    { ptr: table },
  ];
  const args: KernelArg[] =
    path === "mma"
      ? [...tensors, { i32: heads }, { i32: kvHeads }, { i32: splits }, scaleLog2, { f32: scale }, window, softcap]
      : [...tensors, { i32: dt }, { i32: heads }, { i32: kvHeads }, { i32: dim }, scaleLog2, { f32: scale }, window, softcap];
  launchPlan(dev, plan, blocks, args);

  // f32 accumulator -> dtype, times a scale: dq (and split dk) carry dS unscaled, dv needs none.
  const convert = (dst: DevicePtr, acc: DevicePtr, elements: number, by: number): void => {
    const convertThreads = 256;
    const convertBlocks = Math.max(1, Math.min(Math.ceil(elements / convertThreads), dev.multiprocessorCount * 16));
    generic
      .fn("attention_backward_dq")
      .launch([convertBlocks, 1, 1], [convertThreads, 1, 1], 0, [{ ptr: dst }, { ptr: acc }, { i32: dt }, { i64: elements }, { f32: by }]);
  };
  convert(dq.ptr, dqAcc, rows * dim, scale);
  if (splits > 1) {
    convert(dk.ptr, dkvAcc, kvElements, scale);
    convert(dv.ptr, dvAcc, kvElements, 1);
    dev.free(dkvAcc);
  }
  dev.free(table);
  dev.free(dqAcc);
  dev.free(delta);
}

/**
 * out (Q, H, D) = softmax(scale q k^T) v with query i seeing cache rows [0, pastLength + i] of kCache and
 * vCache (Tmax, KV, D) (with a window, the last `window` of them); rows past pastLength + Q - 1 are never read.
 */
export function attentionDecode(
  dev: CudaDevice,
  out: DeviceTensor,
  q: DeviceTensor,
  kCache: DeviceTensor,
  vCache: DeviceTensor,
  pastLength: number,
  scale: number,
  options: AttentionOptions = {},
): void {
  const op = "attentionDecode";
  const [window, softcap] = optionArgs(op, options);
  const layout = checkHeads(op, q, "kCache", kCache);
  expectLike(op, "vCache", vCache, "kCache", kCache);
  expectLike(op, "out", out, "q", q);
  expectFinite(op, "scale", scale);
  const capacity = kCache.shape[0]!;
  if (!Number.isSafeInteger(pastLength) || pastLength < 0) fail(op, `pastLength is ${pastLength}, expected an integer >= 0`);
  if (pastLength + layout.n > capacity) {
    fail(op, `pastLength ${pastLength} + ${layout.n} new tokens exceeds the ${capacity} rows of ${text("kCache", kCache)}; grow the cache first`);
  }
  if (layout.n === 0 || layout.heads === 0 || layout.dim === 0) return;
  const { n, heads, kvHeads, dim, dt } = layout;
  const rows = n * heads;
  // The splits cover the rows some query of this call sees: from the first query's window start on.
  const base = options.window === undefined ? 0 : Math.max(0, pastLength - options.window + 1);
  const { splits, chunk } = decodePlan(rows, pastLength + n - base, dev.multiprocessorCount);
  const module = dev.module("attention-decode.cu");
  const partial = splits > 1 ? dev.alloc(rows * splits * (dim + 2) * 4, "attention decode partials f32") : 0n;
  module
    .fn("attention_decode")
    .launch([rows, splits, 1], [ATTENTION_THREADS, 1, 1], 0, [
      { ptr: out.ptr },
      { ptr: partial },
      { ptr: q.ptr },
      { ptr: kCache.ptr },
      { ptr: vCache.ptr },
      { i32: dt },
      { i32: heads },
      { i32: kvHeads },
      { i32: dim },
      { i32: pastLength },
      { i32: chunk },
      { f32: scale * Math.LOG2E },
      window,
      { i32: base },
      softcap,
    ]);
  if (splits > 1) {
    module
      .fn("attention_decode_combine")
      .launch([rows, 1, 1], [ATTENTION_THREADS, 1, 1], 0, [{ ptr: out.ptr }, { ptr: partial }, { i32: dt }, { i32: dim }, { i32: splits }]);
    dev.free(partial);
  }
}
