// CUDA elementwise ops (kernels/elementwise.cu): add, scale, dropout, SwiGLU and the bias pair, with the CPU
// backend's checks. biasBackward reduces through an f32 scratch of per-block column sums (deterministic).
import type { CudaDevice, DeviceTensor } from "../types.ts";
import { checkAdd, checkAddBias, checkBiasBackward, checkDropoutApply, checkDropoutMask, checkScale, checkSoftcapOp, checkSwigluBackward, checkSwigluForward } from "../../op-checks.ts";
import type { GatedActivation } from "../../types.ts";
import { expectSeparate, floatArgs, strideGrid, ptr } from "./device-checks.ts";

import { dropoutThreshold } from "../../../util/dropout-hash.ts";

const BLOCK = 256;

/** out = a + b (same shape); out may be exactly a or b. */
export function add(dev: CudaDevice, out: DeviceTensor, a: DeviceTensor, b: DeviceTensor): void {
  const op = "add";
  checkAdd(out, a, b);
  expectSeparate(op, [["out", out]], [["a", a], ["b", b]], true);
  const n = out.size;
  if (n === 0) return;
  dev.module("elementwise.cu").fn("add").launch([strideGrid(dev, n, BLOCK), 1, 1], [BLOCK, 1, 1], 0, [
    ...floatArgs(op, "out", out),
    ...floatArgs(op, "a", a),
    ...floatArgs(op, "b", b),
    { i64: n },
  ]);
}

/** x *= s (s rounded to f32). */
export function scale(dev: CudaDevice, x: DeviceTensor, s: number): void {
  const op = "scale";
  checkScale(x, s);
  const n = x.size;
  if (n === 0) return;
  dev.module("elementwise.cu").fn("scale").launch([strideGrid(dev, n, BLOCK), 1, 1], [BLOCK, 1, 1], 0, [...floatArgs(op, "x", x), { f32: s }, { i64: n }]);
}

/** mask u8 = 1 where the counter hash of (index, seed) reaches the threshold of p (src/util/dropout-hash.ts). */
export function dropoutMask(dev: CudaDevice, mask: DeviceTensor, p: number, seed: readonly [number, number]): void {
  checkDropoutMask(mask, p, seed);
  const n = mask.size;
  if (n === 0) return;
  dev.module("elementwise.cu").fn("dropout_mask").launch([strideGrid(dev, n, BLOCK), 1, 1], [BLOCK, 1, 1], 0, [
    ptr(mask),
    { i64: n },
    { u32: seed[0] },
    { u32: seed[1] },
    { u32: dropoutThreshold(p) },
  ]);
}

/** out = x * mask * f32(1 / (1 - p)), mask u8 (same shape) 1 = keep, 0 = drop; p = 0 copies x. out may be exactly x. */
export function dropoutApply(dev: CudaDevice, out: DeviceTensor, x: DeviceTensor, mask: DeviceTensor, p: number): void {
  const op = "dropoutApply";
  checkDropoutApply(out, x, mask, p);
  expectSeparate(op, [["out", out]], [["x", x], ["mask", mask]], true);
  const n = out.size;
  if (n === 0) return;
  dev.module("elementwise.cu").fn("dropout_apply").launch([strideGrid(dev, n, BLOCK), 1, 1], [BLOCK, 1, 1], 0, [
    ...floatArgs(op, "out", out),
    ...floatArgs(op, "x", x),
    ptr(mask),
    { f32: Math.fround(1 / (1 - p)) },
    { i32: p === 0 ? 0 : 1 },
    { i64: n },
  ]);
}

const ACTIVATION_CODE: Record<GatedActivation, number> = { silu: 0, gelu_tanh: 1 };

/** out = act(gate) * up (silu, or tanh GELU); out may be exactly gate or up. */
export function swigluForward(dev: CudaDevice, out: DeviceTensor, gate: DeviceTensor, up: DeviceTensor, activation: GatedActivation = "silu"): void {
  const op = "swigluForward";
  checkSwigluForward(out, gate, up);
  expectSeparate(op, [["out", out]], [["gate", gate], ["up", up]], true);
  const n = out.size;
  if (n === 0) return;
  dev.module("elementwise.cu").fn("swiglu_forward").launch([strideGrid(dev, n, BLOCK), 1, 1], [BLOCK, 1, 1], 0, [
    ...floatArgs(op, "out", out),
    ...floatArgs(op, "gate", gate),
    ...floatArgs(op, "up", up),
    { i64: n },
    { i32: ACTIVATION_CODE[activation] },
  ]);
}

/** dgate = dout * up * act'(g), dup = dout * act(g); both overwritten, neither aliasing an input. */
export function swigluBackward(
  dev: CudaDevice,
  dgate: DeviceTensor,
  dup: DeviceTensor,
  dout: DeviceTensor,
  gate: DeviceTensor,
  up: DeviceTensor,
  activation: GatedActivation = "silu",
): void {
  const op = "swigluBackward";
  checkSwigluBackward(dgate, dup, dout, gate, up);
  expectSeparate(op, [["dgate", dgate], ["dup", dup]], [["dout", dout], ["gate", gate], ["up", up]]);
  const n = gate.size;
  if (n === 0) return;
  dev.module("elementwise.cu").fn("swiglu_backward").launch([strideGrid(dev, n, BLOCK), 1, 1], [BLOCK, 1, 1], 0, [
    ...floatArgs(op, "dgate", dgate),
    ...floatArgs(op, "dup", dup),
    ...floatArgs(op, "dout", dout),
    ...floatArgs(op, "gate", gate),
    ...floatArgs(op, "up", up),
    { i64: n },
    { i32: ACTIVATION_CODE[activation] },
  ]);
}

/** x = cap * tanh(x / cap) in place. */
export function softcap(dev: CudaDevice, x: DeviceTensor, cap: number): void {
  const op = "softcap";
  checkSoftcapOp(x, cap);
  const n = x.size;
  if (n === 0) return;
  dev.module("elementwise.cu").fn("softcap").launch([strideGrid(dev, n, BLOCK), 1, 1], [BLOCK, 1, 1], 0, [...floatArgs(op, "x", x), { f32: cap }, { i64: n }]);
}

/** out (..., F) += bias (F) broadcast over rows. */
export function addBias(dev: CudaDevice, out: DeviceTensor, bias: DeviceTensor): void {
  const op = "addBias";
  const { rows, cols } = checkAddBias(out, bias);
  expectSeparate(op, [["out", out]], [["bias", bias]]);
  if (rows === 0) return;
  // x covers the columns; y strides over rows, up to enough blocks to fill the GPU several times.
  const gridX = Math.ceil(cols / BLOCK);
  const gridY = Math.min(rows, 65535, Math.max(1, Math.ceil((dev.multiprocessorCount * 32) / gridX)));
  dev.module("elementwise.cu").fn("add_bias").launch([gridX, gridY, 1], [BLOCK, 1, 1], 0, [
    ...floatArgs(op, "out", out),
    ...floatArgs(op, "bias", bias),
    { i64: rows },
    { i32: cols },
  ]);
}

/** dbias (F) += column sums of dout (..., F), summed in f32 per block, then across blocks in a fixed order. */
export function biasBackward(dev: CudaDevice, dbias: DeviceTensor, dout: DeviceTensor): void {
  const op = "biasBackward";
  const { rows, cols } = checkBiasBackward(dbias, dout);
  expectSeparate(op, [["dbias", dbias]], [["dout", dout]]);
  if (rows === 0) return;
  const mod = dev.module("elementwise.cu");
  // Blocks of (32 columns, 8 row lanes); gridY row chunks, enough blocks to fill the GPU, at most 1024 partial rows.
  const gridX = Math.ceil(cols / 32);
  const gridY = Math.min(Math.ceil(rows / 8), 1024, Math.max(1, Math.ceil((dev.multiprocessorCount * 16) / gridX)));
  const partials = dev.alloc(gridY * cols * 4, `${op} partial column sums (${gridY}, ${cols}) f32`);
  try {
    mod.fn("bias_backward_partials").launch([gridX, gridY, 1], [32, 8, 1], 0, [{ ptr: partials }, ...floatArgs(op, "dout", dout), { i64: rows }, { i32: cols }]);
    mod.fn("bias_backward_reduce").launch([Math.ceil(cols / BLOCK), 1, 1], [BLOCK, 1, 1], 0, [
      ...floatArgs(op, "dbias", dbias),
      { ptr: partials },
      { i32: gridY },
      { i32: cols },
    ]);
  } finally {
    dev.free(partials);
  }
}
