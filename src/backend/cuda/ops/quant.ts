// CUDA 4-bit blockwise dequantization (kernels/quant.cu), bit-exact with the CPU reference, with its checks.
// The 4-bit weight arrives as device tensors in the layout of ../../types.ts Quant4bitTensors.
import type { CudaDevice, DeviceTensor } from "../types.ts";
import { FP4_INTERVAL_CODES, FP4_THRESHOLDS, NF4_THRESHOLDS } from "../../../quant/codes.ts";
import { checkDequantize4bit, checkQuantize4bit } from "../../op-checks.ts";
import { expectSeparate, floatArgs, ptr, strideGrid } from "./device-checks.ts";

/** Quant4bitTensors with device tensors: packed u8 (ceil(n/2)), absmax f32 (ceil(n/blocksize)), code f32 (16). */
export interface DeviceQuant4bit {
  packed: DeviceTensor;
  absmax: DeviceTensor;
  code: DeviceTensor;
  blocksize: number;
}

/** out (any shape, n elements) = f32(code[nibble(i)] * absmax[i / blocksize]) rounded to out's dtype; element 2j in the high nibble. */
export function dequantize4bit(dev: CudaDevice, out: DeviceTensor, q: DeviceQuant4bit): void {
  const op = "dequantize4bit";
  const n = out.size;
  const { blocksize } = q;
  checkDequantize4bit(out, q);
  expectSeparate(op, [["out", out]], [["packed", q.packed], ["absmax", q.absmax], ["code", q.code]]);
  if (n === 0) return;
  const shift = Math.log2(blocksize);
  const block = 256;
  // Fast path: bf16 out, whole groups of 32 elements inside one absmax block, 16-byte aligned pointers.
  const aligned = q.packed.ptr % 16n === 0n && out.ptr % 16n === 0n;
  if (out.dtype === "bf16" && n % 32 === 0 && Number.isInteger(shift) && blocksize >= 32 && aligned) {
    const groups = n / 32;
    dev.module("quant.cu").fn("dequantize_4bit_bf16x32").launch([strideGrid(dev, groups, block), 1, 1], [block, 1, 1], 0, [
      ptr(out),
      ptr(q.packed),
      ptr(q.absmax),
      ptr(q.code),
      { i64: groups },
      { i32: shift },
    ]);
    return;
  }
  dev.module("quant.cu").fn("dequantize_4bit").launch([strideGrid(dev, Math.ceil(n / 2), block), 1, 1], [block, 1, 1], 0, [
    ...floatArgs(op, "out", out),
    ptr(q.packed),
    ptr(q.absmax),
    ptr(q.code),
    { i64: n },
    { i64: blocksize },
    { i32: Number.isInteger(shift) ? shift : -1 },
  ]);
}

/** bitsandbytes quantize_4bit of x (any float dtype) into packed u8 (ceil(n/2)) and absmax f32 (ceil(n/blocksize)). */
export function quantize4bit(dev: CudaDevice, packed: DeviceTensor, absmax: DeviceTensor, x: DeviceTensor, quantType: "nf4" | "fp4", blocksize: number): void {
  const op = "quantize4bit";
  const n = x.size;
  checkQuantize4bit(packed, absmax, x, blocksize);
  expectSeparate(op, [["packed", packed], ["absmax", absmax]], [["x", x]]);
  if (n === 0) return;
  // The thresholds (and FP4's interval codes) travel in one small scratch: 16 floats then 8 ints.
  const thresholds = quantType === "nf4" ? NF4_THRESHOLDS : FP4_THRESHOLDS;
  const table = new ArrayBuffer(96);
  new Float32Array(table, 0, 16).set(thresholds);
  new Int32Array(table, 64, 8).set(FP4_INTERVAL_CODES);
  const scratch = dev.alloc(96, "quantize4bit thresholds");
  dev.upload(scratch, new Uint8Array(table));
  const warps = 4;
  const blocks = Math.ceil(n / blocksize);
  dev.module("quant.cu").fn("quantize_4bit").launch([Math.max(1, Math.min(Math.ceil(blocks / warps), dev.multiprocessorCount * 64)), 1, 1], [32 * warps, 1, 1], 0, [
    ptr(packed),
    ptr(absmax),
    ...floatArgs(op, "x", x),
    { i64: n },
    { i32: blocksize },
    { ptr: scratch },
    { i32: thresholds.length },
    { ptr: quantType === "nf4" ? 0n : scratch + 64n },
  ]);
  dev.free(scratch);
}
