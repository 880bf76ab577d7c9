// Pre-quantized bitsandbytes 4-bit tensors in a checkpoint: reading one Linear weight's key set from a
// WeightSource, the exact key set bnb saves (so transformers loads what tuna writes), and dequantization.
import { TunaError } from "../util/errors.ts";
import type { WeightSource } from "../io/safetensors/checkpoint.ts";
import { dtypeBits, type SafetensorsDtype } from "../io/safetensors/dtypes.ts";
import type { TensorToWrite } from "../io/safetensors/writer.ts";
import type { BnbQuantizationConfig } from "../hf/config.ts";
import { dequantize4bit, dequantize4bitBf16 } from "./blockwise.ts";
import type { QuantType4bit } from "./codes.ts";
import { dequantizeNestedAbsmax, type NestedAbsmax } from "./double-quant.ts";
import {
  packQuantState,
  packedStorageShape,
  quantStateKey,
  storageOfPackedTensor,
  unpackQuantState,
  type QuantStateJson,
  type QuantStorage,
  type WeightDtypeName,
} from "./quant-state.ts";
import { numel } from "../util/shape.ts";
import { bytesOf } from "../util/bytes.ts";

/** One Linear weight in bnb 4-bit form (Params4bit + QuantState). */
export interface Quantized4bit {
  quantType: QuantType4bit;
  blocksize: number;
  /** The original shape, [out, in] for a Linear weight; elements are flattened row-major. */
  shape: number[];
  /** The original dtype (quant_state.dtype), what dequantization casts back to. */
  dtype: WeightDtypeName;
  /** How the packed bytes sit in a checkpoint (bnb_4bit_quant_storage); the bytes are the same. */
  storage: QuantStorage;
  /** ceil(n/2) bytes, element 2j in the high nibble. */
  packed: Uint8Array;
  /** float32 per block, or its double-quantized form. */
  absmax: Float32Array | NestedAbsmax;
  /**
   * The 16-entry quant_map saved with the tensor. Dequantization uses the fixed table of quantType,
   * as bnb's CUDA kernel does (it never reads quant_map).
   */
  code: Float32Array;
}

export function isNested(absmax: Float32Array | NestedAbsmax): absmax is NestedAbsmax {
  return !(absmax instanceof Float32Array);
}

/** The float32 absmax per block, undoing double quantization when there is one. */
export function absmaxOf(q: Quantized4bit): Float32Array {
  return isNested(q.absmax) ? dequantizeNestedAbsmax(q.absmax) : q.absmax;
}

/** The weight as float32, row-major in q.shape. */
export function dequantizeQuantized4bit(q: Quantized4bit): Float32Array {
  return dequantize4bit(q.packed, absmaxOf(q), numel(q.shape), q.quantType, q.blocksize);
}

/** The weight as bfloat16 bits, row-major in q.shape. */
export function dequantizeQuantized4bitBf16(q: Quantized4bit): Uint16Array {
  return dequantize4bitBf16(q.packed, absmaxOf(q), numel(q.shape), q.quantType, q.blocksize);
}

function float32Of(bytes: Uint8Array): Float32Array {
  // readTensor returns 8-byte aligned arrays; copy anything else rather than fail on alignment.
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  return new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4);
}

const sameShape = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * Reads the pre-quantized tensors of one Linear weight (`<module>.weight` and its `weight.absmax`,
 * `weight.quant_map`, `weight.nested_absmax`, `weight.nested_quant_map`,
 * `weight.quant_state.bitsandbytes__nf4|fp4`), one tensor at a time. As in bnb, the tensor's own
 * quant_state decides quant type, blocksize, nesting and storage; `cfg` must be a 4-bit config.
 */
export async function readQuantized4bit(
  source: WeightSource,
  weightName: string,
  cfg: BnbQuantizationConfig,
  expectedShape: readonly number[],
  options?: { packedBytes?: readonly [number, number] },
): Promise<Quantized4bit> {
  const where = `${source.dir}: "${weightName}"`;
  if (!cfg.loadIn4bit) {
    throw new TunaError("MODEL_INVALID", `${where}: quantization_config is not load_in_4bit, so its weights are not bitsandbytes 4-bit tensors.`);
  }
  const invalid = (what: string): TunaError =>
    new TunaError("MODEL_INVALID", `${where} is not a valid bitsandbytes 4-bit weight: ${what}. Re-download or re-quantize the checkpoint.`);
  const expectTensor = (name: string, dtype: SafetensorsDtype, shape: readonly number[]): string => {
    if (!source.has(name)) throw invalid(`the tensor "${name}" is missing`);
    const info = source.info(name);
    if (info.dtype !== dtype || !sameShape(info.shape, shape)) {
      throw invalid(`"${name}" is ${info.dtype} [${info.shape.join(", ")}], expected ${dtype} [${shape.join(", ")}]`);
    }
    return name;
  };

  const stateTypes = (["nf4", "fp4"] as const).filter((t) => source.has(`${weightName}.${quantStateKey(t)}`));
  if (stateTypes.length === 0) {
    throw invalid(`neither "${weightName}.${quantStateKey("nf4")}" nor "${weightName}.${quantStateKey("fp4")}" is present`);
  }
  if (stateTypes.length > 1) throw invalid(`both an nf4 and an fp4 quant_state are present`);
  const stateType = stateTypes[0]!;
  const stateName = `${weightName}.${quantStateKey(stateType)}`;
  const stateInfo = source.info(stateName);
  if (stateInfo.dtype !== "U8" || stateInfo.shape.length !== 1) throw invalid(`"${stateName}" is ${stateInfo.dtype} [${stateInfo.shape.join(", ")}], not 1-D U8`);
  const state = unpackQuantState(await source.readTensor(stateName), `${where} (${stateName})`);
  if (state.quantType !== stateType) throw invalid(`"${stateName}" says quant_type "${state.quantType}"`);
  if (!sameShape(state.shape, expectedShape)) {
    throw invalid(`its quant_state shape is [${state.shape.join(", ")}] but the model config implies [${expectedShape.join(", ")}]`);
  }
  const n = numel(state.shape);
  const blocks = Math.ceil(n / state.blocksize);

  if (!source.has(weightName)) throw invalid(`the packed tensor "${weightName}" is missing`);
  const storage = storageOfPackedTensor(source.info(weightName), n, where);
  const mapName = expectTensor(`${weightName}.quant_map`, "F32", [16]);
  const hasNestedTensor = source.has(`${weightName}.nested_absmax`);
  if (hasNestedTensor !== (state.nested !== undefined)) {
    throw invalid(
      hasNestedTensor
        ? `"${weightName}.nested_absmax" is present but the quant_state has no nested_* fields`
        : `the quant_state has nested_* fields but "${weightName}.nested_absmax" is missing`,
    );
  }

  // Every name, dtype and shape is checked before the first tensor is read.
  const nested = state.nested;
  const absmaxName = expectTensor(`${weightName}.absmax`, nested === undefined ? "F32" : "U8", [blocks]);
  const nestedNames =
    nested === undefined
      ? undefined
      : {
          absmax: expectTensor(`${weightName}.nested_absmax`, "F32", [Math.ceil(blocks / nested.blocksize)]),
          code: expectTensor(`${weightName}.nested_quant_map`, "F32", [256]),
        };
  const range = options?.packedBytes;
  const packed = range === undefined ? await source.readTensor(weightName, { packed: true }) : await readPackedBytes(source, weightName, range);
  const code = float32Of(await source.readTensor(mapName));
  let absmax: Float32Array | NestedAbsmax;
  if (nested === undefined || nestedNames === undefined) {
    absmax = float32Of(await source.readTensor(absmaxName));
  } else {
    absmax = {
      qabsmax: await source.readTensor(absmaxName),
      nestedAbsmax: float32Of(await source.readTensor(nestedNames.absmax)),
      nestedCode: float32Of(await source.readTensor(nestedNames.code)),
      offset: nested.offset,
      nestedBlocksize: nested.blocksize,
    };
  }
  return { quantType: state.quantType, blocksize: state.blocksize, shape: state.shape, dtype: state.dtype, storage, packed, absmax, code };
}

/**
 * Bytes [start, end) of a packed weight (ends past the packed bytes are cut there): one rank's share of a
 * sharded load. The range must start on a stored element (quant_storage may be a 16- or 32-bit dtype).
 */
async function readPackedBytes(source: WeightSource, weightName: string, [start, end]: readonly [number, number]): Promise<Uint8Array> {
  const info = source.info(weightName);
  const itemsize = dtypeBits(info.dtype) / 8;
  const stop = Math.min(end, info.byteLength);
  const first = Math.min(start, stop);
  if (first % itemsize !== 0 || stop % itemsize !== 0) throw new TunaError("INTERNAL", `bytes [${first}, ${stop}) of "${weightName}" do not fall on ${info.dtype} elements`);
  return source.readTensorRange(weightName, first / itemsize, stop / itemsize, { packed: true });
}

/** The quant_state JSON fields of q. */
export function quantStateOf(q: Quantized4bit): QuantStateJson {
  const state: QuantStateJson = { quantType: q.quantType, blocksize: q.blocksize, dtype: q.dtype, shape: q.shape };
  if (isNested(q.absmax)) state.nested = { blocksize: q.absmax.nestedBlocksize, dtype: "float32", offset: q.absmax.offset };
  return state;
}

/**
 * The tensors Linear4bit._save_to_state_dict writes for one weight (`weightName` = "<module>.weight"),
 * in as_dict order: the packed weight in its storage view, absmax (U8 when nested), quant_map,
 * nested_absmax and nested_quant_map when nested, and the quant_state JSON. A bias is the caller's.
 */
export function quantizedTensorsToWrite(weightName: string, q: Quantized4bit): TensorToWrite[] {
  const n = numel(q.shape);
  const blocks = Math.ceil(n / q.blocksize);
  const absmaxLength = isNested(q.absmax) ? q.absmax.qabsmax.length : q.absmax.length;
  if (q.packed.length !== Math.ceil(n / 2) || absmaxLength !== blocks || q.code.length !== 16) {
    throw new TunaError(
      "INTERNAL",
      `quantizedTensorsToWrite("${weightName}"): ${n} values at blocksize ${q.blocksize} need ${Math.ceil(n / 2)} packed bytes, ` +
        `${blocks} absmax and 16 code values; got ${q.packed.length}, ${absmaxLength}, ${q.code.length}`,
    );
  }
  const view = packedStorageShape(n, q.storage);
  if (view === undefined) {
    throw new TunaError(
      "UNSUPPORTED",
      `"${weightName}" has ${n} values, whose ${Math.ceil(n / 2)} packed bytes do not fill whole ${q.storage} elements; ` +
        `bitsandbytes would drop bytes. Use bnb_4bit_quant_storage "uint8" for this model.`,
    );
  }
  const out: TensorToWrite[] = [{ name: weightName, dtype: view.dtype, shape: view.shape, data: q.packed }];
  if (isNested(q.absmax)) {
    const nested = q.absmax;
    out.push(
      { name: `${weightName}.absmax`, dtype: "U8", shape: [blocks], data: nested.qabsmax },
      { name: `${weightName}.quant_map`, dtype: "F32", shape: [16], data: bytesOf(q.code) },
      { name: `${weightName}.nested_absmax`, dtype: "F32", shape: [nested.nestedAbsmax.length], data: bytesOf(nested.nestedAbsmax) },
      { name: `${weightName}.nested_quant_map`, dtype: "F32", shape: [nested.nestedCode.length], data: bytesOf(nested.nestedCode) },
    );
  } else {
    out.push(
      { name: `${weightName}.absmax`, dtype: "F32", shape: [blocks], data: bytesOf(q.absmax) },
      { name: `${weightName}.quant_map`, dtype: "F32", shape: [16], data: bytesOf(q.code) },
    );
  }
  const json = packQuantState(quantStateOf(q));
  out.push({ name: `${weightName}.${quantStateKey(q.quantType)}`, dtype: "U8", shape: [json.length], data: json });
  return out;
}
