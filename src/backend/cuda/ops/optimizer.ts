// CUDA optimizer ops (kernels/optimizer.cu): PyTorch's AdamW step in the CPU reference's f32 order of operations,
// and the sum of squares for gradient clipping, reduced in double through a per-block scratch (deterministic).
import type { AdamWParams } from "../../types.ts";
import type { CudaDevice, DeviceTensor } from "../types.ts";
import { checkAdamwUpdate, checkSumSquares } from "../../op-checks.ts";
import { expectSeparate, floatArgs, ptr, strideGrid } from "./device-checks.ts";

const f32 = Math.fround;

/** Decoupled-weight-decay Adam over flat f32 buffers of equal size (params, m, v updated in place). */
export function adamwUpdate(dev: CudaDevice, params: DeviceTensor, grads: DeviceTensor, m: DeviceTensor, v: DeviceTensor, p: AdamWParams): void {
  const op = "adamwUpdate";
  checkAdamwUpdate(params, grads, m, v, p);
  expectSeparate(op, [["params", params], ["m", m], ["v", v]], [["grads", grads]]);
  const n = params.size;
  if (n === 0) return;
  // The scalars exactly as the CPU reference (and torch, from Python floats) forms them.
  const lerpWeight = f32(1 - p.beta1);
  const block = 256;
  dev.module("optimizer.cu").fn("adamw_update").launch([strideGrid(dev, n, block), 1, 1], [block, 1, 1], 0, [
    ptr(params),
    ptr(grads),
    ptr(m),
    ptr(v),
    { i64: n },
    { f32: f32(1 - p.lr * p.weightDecay) },
    { f32: lerpWeight },
    { i32: Math.abs(lerpWeight) < 0.5 ? 1 : 0 },
    { f32: f32(1 - lerpWeight) },
    { f32: f32(p.beta2) },
    { f32: f32(1 - p.beta2) },
    { f32: f32(Math.sqrt(1 - p.beta2 ** p.step)) },
    { f32: f32(p.eps) },
    { f32: f32(-(p.lr / (1 - p.beta1 ** p.step))) },
  ]);
}

/** Sum of squares of a float tensor, accumulated in double; waits for the device (downloads 8 bytes). */
export function sumSquares(dev: CudaDevice, x: DeviceTensor): Promise<number> {
  const op = "sumSquares";
  checkSumSquares(x);
  const n = x.size;
  if (n === 0) return Promise.resolve(0);
  const block = 256;
  // At most 8 blocks per SM: the final single-block pass then sums about a thousand partials.
  const parts = Math.min(Math.ceil(n / block), dev.multiprocessorCount * 8);
  const scratch = dev.alloc((parts + 1) * 8, `${op} partial sums (${parts + 1}) f64`);
  try {
    const mod = dev.module("optimizer.cu");
    mod.fn("sum_squares_partials").launch([parts, 1, 1], [block, 1, 1], 0, [{ ptr: scratch }, ...floatArgs(op, "x", x), { i64: n }]);
    mod.fn("sum_squares_final").launch([1, 1, 1], [1024, 1, 1], 0, [{ ptr: scratch }, { i32: parts }]);
    const total = new Float64Array(1);
    dev.download(total, scratch + BigInt(parts * 8));
    return Promise.resolve(total[0]!);
  } finally {
    dev.free(scratch);
  }
}
