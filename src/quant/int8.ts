// LLM.int8 row-wise 8-bit weights, transformers' load_in_8bit format (specs/nf4_fp4.md §5): quantizing
// at load, reading and writing pre-quantized checkpoints (`weight` I8, `SCB` F32, `weight_format` U8).
//
// Why row-wise and not blockwise 8-bit: bnb's blockwise 8-bit quantizer (dynamic map, default
// blocksize 4096) serves 8-bit optimizer states and the nested absmax; transformers' load_in_8bit
// makes Linear8bitLt layers whose Int8Params quantize each output row with int8_vectorwise_quant
// and save CB/SCB. So an 8-bit checkpoint that transformers writes or loads is this format.
import { TunaError } from "../util/errors.ts";
import { f16BitsToF32, f16ToF32Array, f32BitsToF16Bits } from "../util/half.ts";
import { numel } from "../util/shape.ts";
import type { WeightSource } from "../io/safetensors/checkpoint.ts";
import type { SafetensorsDtype } from "../io/safetensors/dtypes.ts";
import type { TensorToWrite } from "../io/safetensors/writer.ts";

const f = Math.fround;

/** int8_vectorwise_dequant multiplies by this Python float (1/127) as a float32 scalar. */
const INV_127 = f(7.874015718698502e-3);

export interface QuantizedInt8 {
  /** [out, in]. */
  shape: [number, number];
  /** Row-major int8 codes (CB). */
  weight: Int8Array;
  /** Per output row, max |W[row, :]| after the float16 cast (SCB). */
  scb: Float32Array;
}

/** torch.round / __float2int_rn: to nearest, ties to even; NaN becomes 0 as the CUDA conversion gives. */
function roundHalfEven(x: number): number {
  if (Number.isNaN(x)) return 0;
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Quantizes one row already cast to float16 values (held as float32): SCB = max |v| (NaN skipped),
 * CB = round_half_even(float32(v * float32(127 / SCB))). bnb's CUDA kernel divides with __fdividef
 * (an approximation); tuna uses the IEEE quotient, as bnb's reference backend does.
 */
function quantizeRow(values: Float32Array, cols: number, out: QuantizedInt8, row: number): void {
  let m = 0;
  for (let j = 0; j < cols; j++) {
    const a = Math.abs(values[j]!);
    if (a > m) m = a;
  }
  out.scb[row] = m;
  const scale = f(127 / m);
  const dst = row * cols;
  for (let j = 0; j < cols; j++) out.weight[dst + j] = roundHalfEven(f(values[j]! * scale));
}

let bf16AsF16: Float32Array | undefined;

/** For each bf16 bit pattern, its value after the cast to float16 (a table: bf16 has 65536 values). */
function bf16AsF16Table(): Float32Array {
  if (bf16AsF16 === undefined) {
    bf16AsF16 = new Float32Array(65536);
    for (let b = 0; b < 65536; b++) bf16AsF16[b] = f16BitsToF32(f32BitsToF16Bits((b << 16) >>> 0));
  }
  return bf16AsF16;
}

/** Rounds float32 values to float16 in place (Int8Params casts the weight to float16 before quantizing). */
function castToF16InPlace(values: Float32Array, halfBits: Uint16Array): void {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) halfBits[i] = f32BitsToF16Bits(bits[i]!);
  f16ToF32Array(halfBits.subarray(0, values.length), values);
}

/**
 * Int8Params._quantize on a [rows, cols] weight given as raw safetensors bytes (F32, BF16 or F16),
 * one row at a time, so no float32 copy of the whole matrix is made.
 */
export function quantizeInt8Rowwise(bytes: Uint8Array, dtype: SafetensorsDtype, rows: number, cols: number, where: string): QuantizedInt8 {
  const itemsize = dtype === "F32" ? 4 : dtype === "BF16" || dtype === "F16" ? 2 : 0;
  if (itemsize === 0) throw new TunaError("MODEL_INVALID", `${where} is ${dtype}; 8-bit quantization takes F32, BF16 or F16 weights.`);
  if (bytes.byteLength !== rows * cols * itemsize) {
    throw new TunaError("MODEL_INVALID", `${where} holds ${bytes.byteLength} bytes, not the ${rows * cols * itemsize} of ${dtype} [${rows}, ${cols}].`);
  }
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  const out: QuantizedInt8 = { shape: [rows, cols], weight: new Int8Array(rows * cols), scb: new Float32Array(rows) };
  const row = new Float32Array(cols);
  const half = new Uint16Array(cols);
  for (let r = 0; r < rows; r++) {
    const offset = aligned.byteOffset + r * cols * itemsize;
    if (dtype === "F32") {
      row.set(new Float32Array(aligned.buffer, offset, cols));
      castToF16InPlace(row, half);
    } else if (dtype === "BF16") {
      const table = bf16AsF16Table();
      const src = new Uint16Array(aligned.buffer, offset, cols);
      for (let j = 0; j < cols; j++) row[j] = table[src[j]!]!;
    } else {
      f16ToF32Array(new Uint16Array(aligned.buffer, offset, cols), row);
    }
    quantizeRow(row, cols, out, r);
  }
  return out;
}

/** int8_vectorwise_dequant: float32(float32(CB * SCB[row]) * float32(1/127)), row-major. */
export function dequantizeInt8Rowwise(q: QuantizedInt8, out: Float32Array = new Float32Array(q.weight.length)): Float32Array {
  const [rows, cols] = q.shape;
  for (let r = 0; r < rows; r++) {
    const s = q.scb[r]!;
    for (let j = r * cols, end = j + cols; j < end; j++) out[j] = f(q.weight[j]! * s) * INV_127;
  }
  return out;
}

function modulePrefix(weightName: string): string {
  if (!weightName.endsWith(".weight")) throw new TunaError("INTERNAL", `"${weightName}" is not a "<module>.weight" name`);
  return weightName.slice(0, -".weight".length);
}

/** Reads a pre-quantized Linear8bitLt weight: `<m>.weight` I8 [out, in], `<m>.SCB` F32 [out], `<m>.weight_format` (row = 0). */
export async function readQuantized8bit(source: WeightSource, weightName: string, expectedShape: readonly [number, number]): Promise<QuantizedInt8> {
  const m = modulePrefix(weightName);
  const [rows, cols] = expectedShape;
  const invalid = (what: string): TunaError =>
    new TunaError("MODEL_INVALID", `${source.dir}: "${weightName}" is not a valid bitsandbytes 8-bit weight: ${what}. Re-download or re-quantize the checkpoint.`);
  const expectTensor = (name: string, dtype: SafetensorsDtype, shape: readonly number[]): string => {
    if (!source.has(name)) throw invalid(`the tensor "${name}" is missing`);
    const info = source.info(name);
    if (info.dtype !== dtype || info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw invalid(`"${name}" is ${info.dtype} [${info.shape.join(", ")}], expected ${dtype} [${shape.join(", ")}]`);
    }
    return name;
  };
  const weight = expectTensor(weightName, "I8", [rows, cols]);
  const scb = expectTensor(`${m}.SCB`, "F32", [rows]);
  const formatName = `${m}.weight_format`;
  if (source.has(formatName)) {
    const info = source.info(formatName);
    if (info.dtype !== "U8" || numel(info.shape) !== 1) throw invalid(`"${formatName}" is ${info.dtype} [${info.shape.join(", ")}], not a U8 scalar`);
    const format = (await source.readTensor(formatName))[0];
    if (format !== 0) throw invalid(`"${formatName}" is ${String(format)}, a tiled layout (col32/turing/ampere); only the row layout (0) is supported`);
  }
  const w = await source.readTensor(weight, { packed: true });
  const s = await source.readTensor(scb);
  const sAligned = s.byteOffset % 4 === 0 ? s : s.slice();
  return {
    shape: [rows, cols],
    weight: new Int8Array(w.buffer, w.byteOffset, w.byteLength),
    scb: new Float32Array(sAligned.buffer, sAligned.byteOffset, rows),
  };
}

/** The tensors Linear8bitLt._save_to_state_dict writes for one weight (a bias is the caller's). */
export function int8TensorsToWrite(weightName: string, q: QuantizedInt8): TensorToWrite[] {
  const m = modulePrefix(weightName);
  return [
    { name: weightName, dtype: "I8", shape: [...q.shape], data: new Uint8Array(q.weight.buffer, q.weight.byteOffset, q.weight.byteLength) },
    { name: `${m}.SCB`, dtype: "F32", shape: [q.shape[0]], data: new Uint8Array(q.scb.buffer, q.scb.byteOffset, q.scb.byteLength) },
    { name: `${m}.weight_format`, dtype: "U8", shape: [], data: Uint8Array.of(0) },
  ];
}
