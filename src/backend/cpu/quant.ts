// 4-bit blockwise dequantization for the CPU backend, as bitsandbytes: element i is
// float32(code[nibble(i)] * absmax[floor(i / blocksize)]), element 2j in the high nibble of byte j.
import type { Quant4bitTensors, Tensor } from "../types.ts";
import { quantizeBlocks4bit } from "../../quant/blockwise.ts";
import { checkDequantize4bit, checkQuantize4bit } from "../op-checks.ts";
import { expectSeparate, f32Data, outputFloats, readFloats, u8Data, writeFloats, type TensorStore } from "./store.ts";

/** bitsandbytes quantize_4bit of x into packed codes and per-block absmax (src/quant/blockwise.ts). */
export function quantize4bit(store: TensorStore, packed: Tensor, absmax: Tensor, x: Tensor, quantType: "nf4" | "fp4", blocksize: number): void {
  const op = "quantize4bit";
  const n = x.size;
  checkQuantize4bit(packed, absmax, x, blocksize);
  const packedSlot = store.get(op, "packed", packed);
  const absmaxSlot = store.get(op, "absmax", absmax);
  const xSlot = store.get(op, "x", x);
  expectSeparate(op, [["packed", packedSlot], ["absmax", absmaxSlot]], [["x", xSlot]]);
  const out = { packed: u8Data(op, "packed", packedSlot), absmax: f32Data(op, "absmax", absmaxSlot) };
  quantizeBlocks4bit(readFloats(xSlot), n, blocksize, quantType, out, 0, 0);
}

/** out (any shape, n elements) = the dequantized weight, rounded from float32 to out's dtype. */
export function dequantize4bit(store: TensorStore, out: Tensor, q: Quant4bitTensors): void {
  const op = "dequantize4bit";
  const n = out.size;
  const { blocksize } = q;
  checkDequantize4bit(out, q);
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
