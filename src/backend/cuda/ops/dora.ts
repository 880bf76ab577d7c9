// CUDA DoRA ops (kernels/dora.cu) with the CPU backend's checks: row norms of the adapted weight, the output
// combination and its backward. The magnitude gradient reduces through an f32 scratch of per-block column
// sums in a fixed order (deterministic), as biasBackward does.
import type { CudaDevice, DeviceTensor } from "../types.ts";
import { checkDoraBackward, checkDoraForward, checkRowNorms } from "../../op-checks.ts";
import { expectSeparate, floatArgs, MAX_ROW_BLOCKS, rowBlock } from "./device-checks.ts";

const BLOCK = 256;

/** norms (R) = the L2 norm of each row of x (R, C). */
export function rowNorms(dev: CudaDevice, norms: DeviceTensor, x: DeviceTensor): void {
  const op = "rowNorms";
  const { rows, cols } = checkRowNorms(norms, x);
  expectSeparate(op, [["norms", norms]], [["x", x]]);
  if (rows === 0) return;
  dev.module("dora.cu").fn("row_norms").launch([Math.min(rows, MAX_ROW_BLOCKS), 1, 1], [rowBlock(cols), 1, 1], 0, [
    ...floatArgs(op, "norms", norms),
    ...floatArgs(op, "x", x),
    { i64: rows },
    { i32: cols },
  ]);
}

/** y += (g - 1) * base + g * lora with g = magnitude / norms per column; y may be exactly base. */
export function doraForward(dev: CudaDevice, y: DeviceTensor, base: DeviceTensor, lora: DeviceTensor, magnitude: DeviceTensor, norms: DeviceTensor): void {
  const op = "doraForward";
  const { rows, cols } = checkDoraForward(y, base, lora, magnitude, norms);
  expectSeparate(op, [["y", y]], [["base", base]], true);
  expectSeparate(op, [["y", y]], [["lora", lora], ["magnitude", magnitude], ["norms", norms]]);
  if (rows === 0) return;
  const gridX = Math.ceil(cols / BLOCK);
  const gridY = Math.min(rows, 65535, Math.max(1, Math.ceil((dev.multiprocessorCount * 32) / gridX)));
  dev.module("dora.cu").fn("dora_forward").launch([gridX, gridY, 1], [BLOCK, 1, 1], 0, [
    ...floatArgs(op, "y", y),
    ...floatArgs(op, "base", base),
    ...floatArgs(op, "lora", lora),
    ...floatArgs(op, "magnitude", magnitude),
    ...floatArgs(op, "norms", norms),
    { i64: rows },
    { i32: cols },
  ]);
}

/** dmagnitude += column sums of dy * (base + lora) / norms; dlora = g * dy; dbase = (g - 1) * dy when given. */
export function doraBackward(
  dev: CudaDevice,
  dmagnitude: DeviceTensor,
  dlora: DeviceTensor,
  dbase: DeviceTensor | null,
  dy: DeviceTensor,
  base: DeviceTensor,
  lora: DeviceTensor,
  magnitude: DeviceTensor,
  norms: DeviceTensor,
): void {
  const op = "doraBackward";
  const { rows, cols } = checkDoraBackward(dmagnitude, dlora, dbase, dy, base, lora, magnitude, norms);
  const outputs: [string, DeviceTensor][] = [["dmagnitude", dmagnitude], ["dlora", dlora], ...(dbase === null ? [] : [["dbase", dbase] as [string, DeviceTensor]])];
  expectSeparate(op, outputs, [["dy", dy], ["magnitude", magnitude], ["norms", norms]]);
  expectSeparate(op, outputs.slice(1), [["base", base], ["lora", lora]], true);
  expectSeparate(op, [["dmagnitude", dmagnitude]], [["base", base], ["lora", lora]]);
  if (rows === 0) return;
  const mod = dev.module("dora.cu");
  const gridX = Math.ceil(cols / 32);
  const gridY = Math.min(Math.ceil(rows / 8), 1024, Math.max(1, Math.ceil((dev.multiprocessorCount * 16) / gridX)));
  const partials = dev.alloc(gridY * cols * 4, `${op} partial column sums (${gridY}, ${cols}) f32`);
  try {
    mod.fn("dora_backward_partials").launch([gridX, gridY, 1], [32, 8, 1], 0, [
      { ptr: partials },
      ...floatArgs(op, "dlora", dlora),
      ...(dbase === null ? [{ ptr: 0n }, { i32: 0 }] : floatArgs(op, "dbase", dbase)),
      ...floatArgs(op, "dy", dy),
      ...floatArgs(op, "base", base),
      ...floatArgs(op, "lora", lora),
      ...floatArgs(op, "magnitude", magnitude),
      ...floatArgs(op, "norms", norms),
      { i64: rows },
      { i32: cols },
    ]);
    mod.fn("dora_magnitude_reduce").launch([Math.ceil(cols / BLOCK), 1, 1], [BLOCK, 1, 1], 0, [
      ...floatArgs(op, "dmagnitude", dmagnitude),
      { ptr: partials },
      ...floatArgs(op, "norms", norms),
      { i32: gridY },
      { i32: cols },
    ]);
  } finally {
    dev.free(partials);
  }
}
