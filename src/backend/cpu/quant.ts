// 4-bit blockwise dequantization for the CPU backend, as bitsandbytes: element i is
// float32(code[nibble(i)] * absmax[floor(i / blocksize)]), element 2j in the high nibble of byte j.
import type { Quant4bitTensors, Tensor } from "../types.ts";
import { expectDtype, expectFloat, expectShape, fail } from "./check.ts";
import { expectSeparate, f32Data, outputFloats, u8Data, writeFloats, type TensorStore } from "./store.ts";

/** out (any shape, n elements) = the dequantized weight, rounded from float32 to out's dtype. */
export function dequantize4bit(store: TensorStore, out: Tensor, q: Quant4bitTensors): void {
  const op = "dequantize4bit";
  const n = out.size;
  const { blocksize } = q;
  if (!Number.isSafeInteger(blocksize) || blocksize <= 0) fail(op, `blocksize ${blocksize} is not a positive integer`);
  expectFloat(op, "out", out);
  expectDtype(op, "packed", q.packed, ["u8"]);
  expectDtype(op, "absmax", q.absmax, ["f32"]);
  expectDtype(op, "code", q.code, ["f32"]);
  // bitsandbytes stores packed as [n/2, 1] and absmax flat; only the element counts matter.
  expectShape(op, "packed (element count)", q.packed, q.packed.shape.length === 1 ? [Math.ceil(n / 2)] : sizedLike(q.packed.shape, Math.ceil(n / 2)));
  expectShape(op, "absmax", q.absmax, [Math.ceil(n / blocksize)]);
  expectShape(op, "code", q.code, [16]);
  const outSlot = store.get(op, "out", out);
  const absmaxSlot = store.get(op, "absmax", q.absmax);
  const codeSlot = store.get(op, "code", q.code);
  expectSeparate(op, [["out", outSlot]], [["absmax", absmaxSlot], ["code", codeSlot]]);
  const packed = u8Data(op, "packed", store.get(op, "packed", q.packed));
  const absmax = f32Data(op, "absmax", absmaxSlot);
  const code = f32Data(op, "code", codeSlot);
  const o = outputFloats(outSlot, false);
  for (let i = 0; i < n; i++) {
    const byte = packed[i >> 1]!;
    const nibble = (i & 1) === 0 ? byte >> 4 : byte & 0x0f;
    o[i] = Math.fround(code[nibble]! * absmax[Math.floor(i / blocksize)]!);
  }
  writeFloats(outSlot, o);
}

/** The shape itself when its element count is `size`, else a rank-1 shape that will not match (for the message). */
function sizedLike(shape: readonly number[], size: number): readonly number[] {
  return shape.reduce((a, b) => a * b, 1) === size ? shape : [size];
}
