// Launch plans for the CUDA attention kernels, host-side only: which kernel serves a shape (bf16 tensor cores or
// the generic path), its tile size and shared memory, the tile tables built from cuSeqlens, decode's cache split.
import type { DType } from "../../types.ts";

/** Threads per block of the attention kernels, except where a KernelPlan says otherwise. */
export const ATTENTION_THREADS = 128;
/** The generic and decode kernels give each lane at most 8 output columns. */
export const MAX_HEAD_DIM = 256;
/** Shared memory a launch gets without opting in (cuFuncSetAttribute). */
export const DEFAULT_SHARED_BYTES = 48 * 1024;

export type AttentionPath = "mma" | "generic";

export interface KernelPlan {
  /** Kernel source under src/backend/cuda/kernels. */
  file: string;
  kernel: string;
  /** Rows per tile: queries for the forward, keys for the backward. */
  tileRows: number;
  /** Threads per block (the kernel's __launch_bounds__). */
  threads: number;
  /** Dynamic shared memory per block, matching the kernel's layout (see its header comment). */
  sharedBytes: number;
}

/**
 * bf16 with D 64 or 128 runs on tensor cores. It needs every tensor 16-byte aligned (cp.async, vector stores)
 * and sm_80 or newer (bf16 mma.sync, cp.async); `arch` is the device's "sm_90" form.
 */
export function attentionPath(dtype: DType, dim: number, aligned16: boolean, arch: string): AttentionPath {
  const sm = Number(/^sm_(\d+)/.exec(arch)?.[1] ?? 0);
  return dtype === "bf16" && (dim === 64 || dim === 128) && aligned16 && sm >= 80 ? "mma" : "generic";
}

/** The tensor-core backward's query tile: 32 rows at D 128 keeps its registers under 255 without spills. */
function mmaBackwardQueryRows(dim: number): number {
  return dim > 64 ? 32 : 64;
}

/**
 * The tensor-core forward's query tile, 16 rows per warp: D 128 takes 128 rows on 8 warps (K/V tiles shared by
 * twice the queries, two blocks per SM); D 64 keeps 64 rows on 4 warps.
 */
function mmaForwardQueryRows(dim: number): number {
  return dim > 64 ? 128 : 64;
}

export function forwardKernelPlan(path: AttentionPath, dim: number): KernelPlan {
  if (path === "mma") {
    const bq = mmaForwardQueryRows(dim);
    // q (BQ, D + 8) + k, v (2, 64, D + 8), bf16.
    const sharedBytes = (bq + 4 * 64) * (dim + 8) * 2;
    return { file: "attention-mma.cu", kernel: `attention_forward_bf16_d${dim}`, tileRows: bq, threads: 2 * bq, sharedBytes };
  }
  // f32 q (16, D), k (32, D + 1), v (32, D).
  const sharedBytes = (16 * dim + 32 * (dim + 1) + 32 * dim) * 4;
  return { file: "attention.cu", kernel: "attention_forward_generic", tileRows: 16, threads: ATTENTION_THREADS, sharedBytes };
}

export function backwardKernelPlan(path: AttentionPath, dim: number): KernelPlan {
  if (path === "mma") {
    const bq = mmaBackwardQueryRows(dim);
    const stride = dim + 8;
    // bf16 k, v (64, D + 8), q, dout (2, BQ, D + 8), dS^T (64, BQ + 8); f32 lse, delta (2, BQ).
    const sharedBytes = (2 * 64 * stride + 4 * bq * stride + 64 * (bq + 8)) * 2 + 4 * bq * 4;
    return { file: "attention-mma-backward.cu", kernel: `attention_backward_bf16_d${dim}`, tileRows: 64, threads: ATTENTION_THREADS, sharedBytes };
  }
  // f32 k, v (32, D + 1), dk, dv (32, D), q, dout (16, D), p, ds (16, 33), lse, delta (16).
  return { file: "attention.cu", kernel: "attention_backward_generic", tileRows: 32, threads: ATTENTION_THREADS, sharedBytes: (160 * dim + 1152) * 4 };
}

/** Backward blocks a multiprocessor holds at once (the D 128 kernel's registers allow two). */
const BACKWARD_BLOCKS_PER_SM = 2;

/**
 * How many blocks share one (key tile, kv head) of the tensor-core backward, each taking group / splits of the
 * group's query heads and adding its dK, dV into f32 scratch with atomics. A block's work is the query rows at
 * or after its key tile times its heads; the smallest divisor of the group is taken whose longest block is at
 * most half an even share of the whole work over the resident blocks, so the longest-first order can balance
 * the tail. MHA (group 1), and launches whose unsplit blocks already fill the resident slots, stay at 1: dK, dV
 * are then written directly.
 */
export function backwardHeadSplits(keyTiles: Int32Array, heads: number, kvHeads: number, multiprocessors: number): number {
  const group = heads / kvHeads;
  // Blocks enough to fill every resident slot already: splitting only adds the atomics (measured on the H200,
  // 8 x 512 tokens with KV 8: 512 blocks, split 2 took 0.475 ms against 0.404 unsplit).
  if ((keyTiles.length / 3) * kvHeads >= BACKWARD_BLOCKS_PER_SM * multiprocessors) return 1;
  let longest = 0;
  let total = 0;
  for (let i = 0; i + 2 < keyTiles.length; i += 3) {
    const rows = keyTiles[i + 1]! - keyTiles[i + 2]!;
    longest = Math.max(longest, rows);
    total += rows;
  }
  const evenShare = (total * heads) / (BACKWARD_BLOCKS_PER_SM * multiprocessors);
  for (let splits = 1; splits < group; splits++) {
    if (group % splits === 0 && 2 * longest * (group / splits) <= evenShare) return splits;
  }
  return Math.max(group, 1);
}

/**
 * Tiles of `tileRows` rows laid from each document's start: int32 triples (docStart, docEnd, rowStart).
 * Longest work first so the last blocks of a launch are short ones; ties keep document order. Work of a
 * "query" tile (forward) is the keys its last row sees; of a "key" tile (backward), the query rows at or after
 * its first key. Empty documents give no tiles.
 */
export function buildTileTable(bounds: Int32Array, tileRows: number, kind: "query" | "key"): Int32Array {
  const starts: number[] = [];
  const work: number[] = [];
  const docOf: number[] = [];
  for (let s = 0; s + 1 < bounds.length; s++) {
    const docStart = bounds[s]!;
    const docEnd = bounds[s + 1]!;
    for (let row = docStart; row < docEnd; row += tileRows) {
      starts.push(row);
      docOf.push(s);
      work.push(kind === "query" ? Math.min(row + tileRows, docEnd) - docStart : docEnd - row);
    }
  }
  const order = starts.map((_, i) => i);
  order.sort((a, b) => work[b]! - work[a]! || a - b);
  const table = new Int32Array(order.length * 3);
  order.forEach((t, i) => {
    const s = docOf[t]!;
    table[3 * i] = bounds[s]!;
    table[3 * i + 1] = bounds[s + 1]!;
    table[3 * i + 2] = starts[t]!;
  });
  return table;
}

export interface DecodePlan {
  /** Blocks per (query, head) along the cache; 1 writes the output directly, more go through a combine. */
  splits: number;
  /** Cache rows per split. */
  chunk: number;
}

/** Cache rows below which a split is not worth its partial write and combine. */
const MIN_DECODE_CHUNK = 256;

/**
 * Splits the visible cache rows (pastLength + Q) so that rows * splits blocks (rows = Q * H) fill about two
 * blocks per multiprocessor, each split keeping at least MIN_DECODE_CHUNK rows.
 */
export function decodePlan(rows: number, visible: number, multiprocessors: number): DecodePlan {
  const wanted = Math.ceil((2 * multiprocessors) / Math.max(rows, 1));
  const most = Math.max(1, Math.floor(visible / MIN_DECODE_CHUNK));
  const tried = Math.max(1, Math.min(wanted, most));
  const chunk = Math.ceil(visible / tried);
  return { splits: Math.ceil(visible / chunk), chunk };
}
