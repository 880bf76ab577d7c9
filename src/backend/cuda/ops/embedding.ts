// CUDA embedding lookup and its scatter-add backward (kernels/embedding.cu), with the CPU backend's checks.
// The backward adds with f32 atomics, so dtable must be f32 and the order of duplicate ids' sums varies.
import type { CudaDevice, DeviceTensor } from "../types.ts";
import { fail } from "../../checks.ts";
import { checkEmbeddingBackward, checkEmbeddingForward } from "../../op-checks.ts";
import { expectInt32, expectSeparate, floatArgs, ptr, rowBlock, MAX_ROW_BLOCKS } from "./device-checks.ts";

/** out (N, C) = table[ids]; ids i32 (N) in [0, V), table (V, C). An id outside the table gives a NaN row. */
export function embeddingForward(dev: CudaDevice, out: DeviceTensor, ids: DeviceTensor, table: DeviceTensor): void {
  const op = "embeddingForward";
  const { vocab, channels } = checkEmbeddingForward(out, ids, table);
  expectInt32(op, "vocab", vocab);
  expectSeparate(op, [["out", out]], [["table", table], ["ids", ids]]);
  const tokens = ids.size;
  if (tokens === 0 || channels === 0) return;
  const block = rowBlock(channels);
  const grid = Math.min(tokens, MAX_ROW_BLOCKS);
  dev.module("embedding.cu").fn("embedding_forward").launch([grid, 1, 1], [block, 1, 1], 0, [
    ...floatArgs(op, "out", out),
    ptr(ids),
    ...floatArgs(op, "table", table),
    { i64: tokens },
    { i32: vocab },
    { i32: channels },
  ]);
}

/** dtable (V, C) f32 += scatter of dout (N, C) by ids; ids < 0 are skipped (ids >= V too: the device cannot throw). */
export function embeddingBackward(dev: CudaDevice, dtable: DeviceTensor, dout: DeviceTensor, ids: DeviceTensor): void {
  const op = "embeddingBackward";
  // First, so a bf16 dtable is told why it must be f32 here (the CPU backend accepts any float dtype).
  if (dtable.dtype !== "f32") fail(op, `dtable dtype ${dtable.dtype} is not f32: the CUDA backward adds with f32 atomics; keep the embedding gradient in f32`);
  const { vocab, channels } = checkEmbeddingBackward(dtable, dout, ids);
  expectInt32(op, "vocab", vocab);
  expectSeparate(op, [["dtable", dtable]], [["dout", dout], ["ids", ids]]);
  const tokens = ids.size;
  if (tokens === 0 || channels === 0) return;
  const block = rowBlock(channels);
  const grid = Math.min(tokens, MAX_ROW_BLOCKS);
  dev.module("embedding.cu").fn("embedding_backward").launch([grid, 1, 1], [block, 1, 1], 0, [
    ptr(dtable),
    ...floatArgs(op, "dout", dout),
    ptr(ids),
    { i64: tokens },
    { i32: vocab },
    { i32: channels },
  ]);
}
