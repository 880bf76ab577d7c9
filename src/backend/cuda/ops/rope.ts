// CUDA rotary embedding (kernels/rope.cu): in-place rotation of (N, heads, D) by HF's rotate_half pairing,
// forward by +angle and backward by -angle, with the CPU backend's checks.
import type { CudaDevice, DeviceTensor } from "../types.ts";
import { checkRope } from "../../op-checks.ts";
import { expectSeparate, floatArgs, ptr, strideGrid } from "./device-checks.ts";

function rotate(dev: CudaDevice, op: "ropeForward" | "ropeBackward", what: string, x: DeviceTensor, positions: DeviceTensor, invFreq: DeviceTensor, direction: 1 | -1): void {
  const { tokens, heads, dim } = checkRope(op, what, x, positions, invFreq);
  const half = dim / 2;
  expectSeparate(op, [[what, x]], [["positions", positions], ["invFreq", invFreq]]);
  const pairs = tokens * half;
  if (pairs === 0 || heads === 0) return;
  const block = 256;
  dev.module("rope.cu").fn("rope_rotate").launch([strideGrid(dev, pairs, block), 1, 1], [block, 1, 1], 0, [
    ...floatArgs(op, what, x),
    ptr(positions),
    ptr(invFreq),
    { i64: tokens },
    { i32: heads },
    { i32: dim },
    { f32: direction },
  ]);
}

/** In-place rotary embedding on x (N, heads, D); positions i32 (N); invFreq f32 (D/2). */
export function ropeForward(dev: CudaDevice, x: DeviceTensor, positions: DeviceTensor, invFreq: DeviceTensor): void {
  rotate(dev, "ropeForward", "x", x, positions, invFreq, 1);
}

/** In-place inverse rotation of a gradient dx (N, heads, D). */
export function ropeBackward(dev: CudaDevice, dx: DeviceTensor, positions: DeviceTensor, invFreq: DeviceTensor): void {
  rotate(dev, "ropeBackward", "dx", dx, positions, invFreq, -1);
}
