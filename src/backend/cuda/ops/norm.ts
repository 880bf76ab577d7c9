// CUDA RMSNorm forward/backward (kernels/norm.cu) in HF LlamaRMSNorm's order, with the CPU backend's checks.
// The backward's dweight goes through an f32 scratch of per-block partial rows, reduced in a fixed order.
import type { CudaDevice, DeviceTensor } from "../types.ts";
import type { RmsnormOptions } from "../../types.ts";
import { fail } from "../../checks.ts";
import { checkRmsnormBackward, checkRmsnormForward } from "../../op-checks.ts";
import { expectSeparate, floatArgs, ptr, rowBlock, MAX_ROW_BLOCKS } from "./device-checks.ts";

/** Dynamic shared memory a block may use without opting in (cuFuncSetAttribute) and the most it can get (sm_80+). */
const DEFAULT_SHARED_BYTES = 48 * 1024;
const MAX_SHARED_BYTES = 227 * 1024;

/** out (..., C) = cast(x * rstd) * weight; rstd f32 (...) saved for the backward. */
export function rmsnormForward(dev: CudaDevice, out: DeviceTensor, rstd: DeviceTensor, x: DeviceTensor, weight: DeviceTensor, eps: number, options: RmsnormOptions = {}): void {
  const op = "rmsnormForward";
  const { rows, cols } = checkRmsnormForward(out, rstd, x, weight, eps);
  expectSeparate(op, [["out", out], ["rstd", rstd]], [["x", x], ["weight", weight]]);
  if (rows === 0) return;
  const block = rowBlock(cols);
  const grid = Math.min(rows, MAX_ROW_BLOCKS);
  dev.module("norm.cu").fn("rmsnorm_forward").launch([grid, 1, 1], [block, 1, 1], 0, [
    ...floatArgs(op, "out", out),
    ptr(rstd),
    ...floatArgs(op, "x", x),
    ...floatArgs(op, "weight", weight),
    { i64: rows },
    { i32: cols },
    { f32: eps },
    { i32: options.plusOne === true ? 1 : 0 },
  ]);
}

/**
 * dx = rstd * (g - n * mean(g * n)), g = dout * weight, n = x * rstd (overwritten, or added when accumulate);
 * dweight += sum over rows of dout * cast(n) when given.
 */
export function rmsnormBackward(
  dev: CudaDevice,
  dx: DeviceTensor,
  dweight: DeviceTensor | null,
  dout: DeviceTensor,
  x: DeviceTensor,
  weight: DeviceTensor,
  rstd: DeviceTensor,
  accumulate: boolean,
  options: RmsnormOptions = {},
): void {
  const op = "rmsnormBackward";
  const { rows, cols } = checkRmsnormBackward(dx, dweight, dout, x, weight, rstd);
  const inputs = [["dout", dout], ["x", x], ["weight", weight], ["rstd", rstd]] as const;
  expectSeparate(op, dweight === null ? [["dx", dx]] : [["dx", dx], ["dweight", dweight]], inputs);
  if (rows === 0) return;
  const mod = dev.module("norm.cu");
  const block = rowBlock(cols);
  const common = [
    ...floatArgs(op, "dout", dout),
    ...floatArgs(op, "x", x),
    ...floatArgs(op, "weight", weight),
    ptr(rstd),
    { i64: rows },
    { i32: cols },
    { i32: accumulate ? 1 : 0 },
    { i32: options.plusOne === true ? 1 : 0 },
  ];
  if (dweight === null) {
    const grid = Math.min(rows, MAX_ROW_BLOCKS);
    mod.fn("rmsnorm_backward").launch([grid, 1, 1], [block, 1, 1], 0, [...floatArgs(op, "dx", dx), { ptr: 0n }, ...common]);
    return;
  }
  // Two blocks per SM keep the GPU busy while the partial rows (grid, C) f32 stay a few MB.
  const sharedBytes = cols * 4;
  if (sharedBytes > MAX_SHARED_BYTES) fail(op, `C = ${cols} needs ${sharedBytes} bytes of shared memory for dweight, above the ${MAX_SHARED_BYTES} a block can have`);
  const grid = Math.min(rows, dev.multiprocessorCount * 2);
  const partials = dev.alloc(grid * cols * 4, `${op} dweight partials (${grid}, ${cols}) f32`);
  try {
    const backward = mod.fn("rmsnorm_backward");
    if (sharedBytes > DEFAULT_SHARED_BYTES) backward.setMaxDynamicSharedBytes(sharedBytes);
    backward.launch([grid, 1, 1], [block, 1, 1], sharedBytes, [...floatArgs(op, "dx", dx), { ptr: partials }, ...common]);
    const reduceBlock = 256;
    mod.fn("rmsnorm_dweight_reduce").launch([Math.ceil(cols / reduceBlock), 1, 1], [reduceBlock, 1, 1], 0, [
      ...floatArgs(op, "dweight", dweight),
      { ptr: partials },
      { i32: grid },
      { i32: cols },
    ]);
  } finally {
    // Stream-ordered allocator: a later alloc reuses the block only after these kernels on the same stream.
    dev.free(partials);
  }
}
