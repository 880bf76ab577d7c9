// ggml tensor encodings tuna writes and reads: F32, F16, BF16, Q8_0, Q5_0 and the K-quants (k-quants.ts),
// bit for bit as ggml's reference code (ggml-quants.c quantize_row_*_ref) computes them in float32.
import { TunaError } from "../../util/errors.ts";
import { f16BitsToF32, f32BitsToF16Bits, f32Bits } from "../../util/half.ts";
import { decodeToFloat32, encodeFromFloat32 } from "../safetensors/convert.ts";
import { blockOf, type GgmlTypeName } from "./format.ts";
import { dequantizeKQuant, quantizeKQuant, K_QUANT_TYPES, type KQuantType } from "./k-quants.ts";

/** C's roundf: halves away from zero. */
export function roundf(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

const QK8_0 = 32;

function quantizeQ8_0(values: Float32Array): Uint8Array {
  const blocks = values.length / QK8_0;
  const out = new Uint8Array(blocks * 34);
  const view = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    for (let j = 0; j < QK8_0; j++) amax = Math.max(amax, Math.abs(values[b * QK8_0 + j]!));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    view.setUint16(b * 34, f32BitsToF16Bits(f32Bits(d)), true);
    for (let j = 0; j < QK8_0; j++) view.setInt8(b * 34 + 2 + j, roundf(Math.fround(values[b * QK8_0 + j]! * id)));
  }
  return out;
}

function dequantizeQ8_0(bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < count / QK8_0; b++) {
    const d = f16BitsToF32(view.getUint16(b * 34, true));
    for (let j = 0; j < QK8_0; j++) out[b * QK8_0 + j] = Math.fround(view.getInt8(b * 34 + 2 + j) * d);
  }
  return out;
}

const QK5_0 = 32;

/** Q5_0 (22 bytes a block: d as f16, 32 fifth bits, 16 bytes of low nibbles): quantize_row_q5_0_ref. */
function quantizeQ5_0(values: Float32Array): Uint8Array {
  const blocks = values.length / QK5_0;
  const out = new Uint8Array(blocks * 22);
  const view = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    const x = values.subarray(b * QK5_0, (b + 1) * QK5_0);
    let amax = 0;
    let max = 0;
    for (const v of x) {
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = Math.fround(max / -16);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    view.setUint16(b * 22, f32BitsToF16Bits(f32Bits(d)), true);
    let qh = 0;
    for (let j = 0; j < QK5_0 / 2; j++) {
      // C's (int8_t)(float) truncates toward zero.
      const xi0 = Math.min(31, Math.trunc(Math.fround(Math.fround(x[j]! * id) + 16.5)));
      const xi1 = Math.min(31, Math.trunc(Math.fround(Math.fround(x[j + 16]! * id) + 16.5)));
      out[b * 22 + 6 + j] = (xi0 & 0x0f) | ((xi1 & 0x0f) << 4);
      qh |= ((xi0 & 0x10) >> 4) << j;
      qh |= ((xi1 & 0x10) >> 4) << (j + 16);
    }
    view.setUint32(b * 22 + 2, qh >>> 0, true);
  }
  return out;
}

function dequantizeQ5_0(bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < count / QK5_0; b++) {
    const d = f16BitsToF32(view.getUint16(b * 22, true));
    const qh = view.getUint32(b * 22 + 2, true);
    for (let j = 0; j < 16; j++) {
      const q = bytes[b * 22 + 6 + j]!;
      const x0 = ((q & 0x0f) | (((qh >>> j) << 4) & 0x10)) - 16;
      const x1 = ((q >> 4) | ((qh >>> (j + 12)) & 0x10)) - 16;
      out[b * QK5_0 + j] = Math.fround(x0 * d);
      out[b * QK5_0 + j + 16] = Math.fround(x1 * d);
    }
  }
  return out;
}

function isKQuant(type: GgmlTypeName): type is KQuantType {
  return (K_QUANT_TYPES as readonly string[]).includes(type);
}

/** The types `encodeGgml` writes. */
export const WRITABLE_TYPES: readonly GgmlTypeName[] = ["F32", "F16", "BF16", "Q8_0", "Q5_0", ...K_QUANT_TYPES];

/** `values` (rows of `rowLength`, row-major) in ggml `type`. Rows must hold whole blocks of the type. */
export function encodeGgml(values: Float32Array, rowLength: number, type: GgmlTypeName): Uint8Array {
  if (rowLength % blockOf(type).elements !== 0 || values.length % rowLength !== 0) {
    throw new TunaError("INTERNAL", `${type} needs rows of whole ${blockOf(type).elements}-value blocks; got rows of ${rowLength}`);
  }
  switch (type) {
    case "F32":
      return encodeFromFloat32(values, "F32");
    case "F16":
      return encodeFromFloat32(values, "F16");
    case "BF16":
      return encodeFromFloat32(values, "BF16");
    case "Q8_0":
      return quantizeQ8_0(values);
    case "Q5_0":
      return quantizeQ5_0(values);
    default:
      if (isKQuant(type)) return quantizeKQuant(type, values);
      throw new TunaError("UNSUPPORTED", `writing ggml ${type} is not supported (supported: ${WRITABLE_TYPES.join(", ")})`);
  }
}

/** Float32 values of `count` elements stored in ggml `type`. */
export function decodeGgml(bytes: Uint8Array, count: number, type: GgmlTypeName): Float32Array {
  switch (type) {
    case "F32":
      return decodeToFloat32(bytes, "F32");
    case "F16":
      return decodeToFloat32(bytes, "F16");
    case "BF16":
      return decodeToFloat32(bytes, "BF16");
    case "Q8_0":
      return dequantizeQ8_0(bytes, count);
    case "Q5_0":
      return dequantizeQ5_0(bytes, count);
    default:
      if (isKQuant(type)) return dequantizeKQuant(type, bytes, count);
      throw new TunaError("UNSUPPORTED", `reading ggml ${type} tensors is not supported (tuna reads ${WRITABLE_TYPES.join(", ")})`);
  }
}
