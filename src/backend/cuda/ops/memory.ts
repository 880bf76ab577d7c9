// CUDA fill (any dtype, the value encoded as the CPU reference's encodeScalar does) and conversion between
// float dtypes (kernels/memory.cu), which the backend uses for copy() across dtypes and bf16 copies of f32 weights.
import { encodeScalar } from "../../cpu/store.ts";
import type { CudaDevice, DeviceTensor } from "../types.ts";
import { DTYPE_BYTES } from "../types.ts";
import { expectFloat, expectShape } from "../../checks.ts";
import { expectSeparate, floatArgs, strideGrid } from "./device-checks.ts";

const BLOCK = 256;

/** The element's bytes, little-endian, as an unsigned number of DTYPE_BYTES bytes. */
function bitPattern(t: DeviceTensor, value: number): number {
  const encoded = encodeScalar("fill", t.dtype, value);
  if (t.dtype === "f32") return new Uint32Array(Float32Array.of(encoded).buffer)[0]!;
  if (t.dtype === "i32") return encoded >>> 0;
  return encoded;
}

/** Every element of t = value (rounded to nearest even for bf16/f16; i32 and u8 take integers in range). */
export function fill(dev: CudaDevice, t: DeviceTensor, value: number): void {
  const pattern = bitPattern(t, value);
  const bytes = DTYPE_BYTES[t.dtype];
  const n = t.size;
  if (n === 0) return;
  const byte = pattern & 0xff;
  let uniform = true;
  for (let k = 1; k < bytes; k++) if (((pattern >>> (8 * k)) & 0xff) !== byte) uniform = false;
  if (uniform) {
    dev.memset(t.ptr, byte, n * bytes);
    return;
  }
  const mod = dev.module("memory.cu");
  const kernel = bytes === 4 ? mod.fn("fill_u32") : mod.fn("fill_u16");
  kernel.launch([strideGrid(dev, n, BLOCK), 1, 1], [BLOCK, 1, 1], 0, [{ ptr: t.ptr }, { u32: pattern }, { i64: n }]);
}

/** dst = src converted between float dtypes through f32 (round to nearest even); same shape, no overlap. */
export function convert(dev: CudaDevice, dst: DeviceTensor, src: DeviceTensor): void {
  const op = "convert";
  expectFloat(op, "dst", dst);
  expectFloat(op, "src", src);
  expectShape(op, "dst", dst, src.shape);
  expectSeparate(op, [["dst", dst]], [["src", src]]);
  const n = dst.size;
  if (n === 0) return;
  dev.module("memory.cu").fn("convert").launch([strideGrid(dev, n, BLOCK), 1, 1], [BLOCK, 1, 1], 0, [...floatArgs(op, "dst", dst), ...floatArgs(op, "src", src), { i64: n }]);
}
