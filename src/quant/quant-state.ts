// bnb's serialized 4-bit metadata: the quant_state JSON bytes (pack_dict_to_tensor, byte-exact with
// Python's json.dumps) and the bnb_4bit_quant_storage views of the packed bytes (specs/nf4_fp4.md §2.6, §4).
import { TunaError } from "../util/errors.ts";
import type { SafetensorsDtype } from "../io/safetensors/dtypes.ts";
import { BLOCKSIZES, isBlocksize } from "./blockwise.ts";
import type { QuantType4bit } from "./codes.ts";

/** The original weight dtype a quant_state records (`str(torch.dtype).strip("torch.")`). */
export type WeightDtypeName = "bfloat16" | "float16" | "float32";

export const WEIGHT_DTYPE_OF: Readonly<Record<WeightDtypeName, SafetensorsDtype>> = { bfloat16: "BF16", float16: "F16", float32: "F32" };

export function weightDtypeName(dtype: SafetensorsDtype): WeightDtypeName | undefined {
  return dtype === "BF16" ? "bfloat16" : dtype === "F16" ? "float16" : dtype === "F32" ? "float32" : undefined;
}

export interface QuantStateJson {
  quantType: QuantType4bit;
  blocksize: number;
  dtype: WeightDtypeName;
  /** The original tensor shape, e.g. [out, in]. */
  shape: number[];
  /** Present when the absmax is double-quantized. `offset` is a float32 value. */
  nested?: { blocksize: number; dtype: "float32"; offset: number };
}

/** The state-dict key suffix that carries the JSON (after `<module>.weight.`). */
export function quantStateKey(quantType: QuantType4bit): string {
  return `quant_state.bitsandbytes__${quantType}`;
}

/**
 * Python's repr(float), which json.dumps uses: the shortest round-trip digits (as JS prints them),
 * fixed notation with a ".0" for integral values, exponent notation ("1e-05", "1.5e+16") when the
 * decimal point sits at or before the 4th place after it, or more than 16 places in.
 */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (x === Infinity) return "Infinity";
  if (x === -Infinity) return "-Infinity";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const sign = x < 0 ? "-" : "";
  const [mantissa = "", exponent] = String(Math.abs(x)).split("e");
  const dot = mantissa.indexOf(".");
  const intPart = dot < 0 ? mantissa : mantissa.slice(0, dot);
  let digits = intPart + (dot < 0 ? "" : mantissa.slice(dot + 1));
  // value = 0.<digits> * 10^decpt
  let decpt = intPart.length + (exponent === undefined ? 0 : Number(exponent));
  const leadingZeros = /^0*/.exec(digits)?.[0].length ?? 0;
  digits = digits.slice(leadingZeros).replace(/0+$/, "");
  decpt -= leadingZeros;
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) return `${sign}0.${"0".repeat(-decpt)}${digits}`;
    if (decpt >= digits.length) return `${sign}${digits}${"0".repeat(decpt - digits.length)}.0`;
    return `${sign}${digits.slice(0, decpt)}.${digits.slice(decpt)}`;
  }
  const e = decpt - 1;
  const m = digits.length === 1 ? digits : `${digits[0]}.${digits.slice(1)}`;
  return `${sign}${m}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
}

/**
 * pack_dict_to_tensor(non-tensor fields of QuantState.as_dict): json.dumps with ", " and ": ", keys in
 * as_dict's order, no trailing newline, UTF-8.
 */
export function packQuantState(state: QuantStateJson): Uint8Array {
  const parts = [
    `"quant_type": "${state.quantType}"`,
    `"blocksize": ${state.blocksize}`,
    `"dtype": "${state.dtype}"`,
    `"shape": [${state.shape.join(", ")}]`,
  ];
  if (state.nested !== undefined) {
    parts.push(
      `"nested_blocksize": ${state.nested.blocksize}`,
      `"nested_dtype": "${state.nested.dtype}"`,
      `"nested_offset": ${pythonFloatRepr(state.nested.offset)}`,
    );
  }
  return new TextEncoder().encode(`{${parts.join(", ")}}`);
}

function invalidState(where: string, what: string): TunaError {
  return new TunaError("MODEL_INVALID", `${where}: the bitsandbytes quant_state ${what}; the checkpoint is corrupt or not made by bitsandbytes.`);
}

const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/** unpack_tensor_to_dict plus the checks QuantState.from_dict relies on. `where` names the tensor. */
export function unpackQuantState(bytes: Uint8Array, where: string): QuantStateJson {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw invalidState(where, `is not UTF-8 JSON (${(e as Error).message})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw invalidState(where, "is not a JSON object");
  const o = json as Record<string, unknown>;
  const quantType = o["quant_type"];
  if (quantType !== "nf4" && quantType !== "fp4") throw invalidState(where, `has quant_type ${JSON.stringify(quantType)}, not "nf4" or "fp4"`);
  const blocksize = o["blocksize"];
  if (typeof blocksize !== "number" || !isBlocksize(blocksize)) {
    throw invalidState(where, `has blocksize ${JSON.stringify(blocksize)}, not one of ${BLOCKSIZES.join(", ")}`);
  }
  const dtype = o["dtype"];
  if (dtype !== "bfloat16" && dtype !== "float16" && dtype !== "float32") {
    throw invalidState(where, `has dtype ${JSON.stringify(dtype)}, not bfloat16, float16 or float32`);
  }
  const shape = o["shape"];
  if (!Array.isArray(shape) || !shape.every(isCount)) throw invalidState(where, `has shape ${JSON.stringify(shape)}, not a list of sizes`);
  const state: QuantStateJson = { quantType, blocksize, dtype, shape };
  const nestedKeys = ["nested_blocksize", "nested_dtype", "nested_offset"].filter((k) => k in o);
  if (nestedKeys.length === 0) return state;
  if (nestedKeys.length < 3) throw invalidState(where, `has ${nestedKeys.join(", ")} but not all of nested_blocksize, nested_dtype, nested_offset`);
  const nestedBlocksize = o["nested_blocksize"];
  if (typeof nestedBlocksize !== "number" || !isBlocksize(nestedBlocksize)) {
    throw invalidState(where, `has nested_blocksize ${JSON.stringify(nestedBlocksize)}, not one of ${BLOCKSIZES.join(", ")}`);
  }
  if (o["nested_dtype"] !== "float32") throw invalidState(where, `has nested_dtype ${JSON.stringify(o["nested_dtype"])}, not "float32"`);
  const offset = o["nested_offset"];
  if (typeof offset !== "number") throw invalidState(where, `has nested_offset ${JSON.stringify(offset)}, not a number`);
  // from_dict: torch.tensor(float(nested_offset)) is a float32 tensor.
  state.nested = { blocksize: nestedBlocksize, dtype: "float32", offset: Math.fround(offset) };
  return state;
}

// ---- bnb_4bit_quant_storage ----

export type QuantStorage = "uint8" | "int8" | "bfloat16" | "float16" | "float32";

const STORAGE: Readonly<Record<QuantStorage, { dtype: SafetensorsDtype; itemsize: number }>> = {
  uint8: { dtype: "U8", itemsize: 1 },
  int8: { dtype: "I8", itemsize: 1 },
  bfloat16: { dtype: "BF16", itemsize: 2 },
  float16: { dtype: "F16", itemsize: 2 },
  float32: { dtype: "F32", itemsize: 4 },
};

export const QUANT_STORAGES = Object.keys(STORAGE) as QuantStorage[];

export function isQuantStorage(s: string): s is QuantStorage {
  return Object.hasOwn(STORAGE, s);
}

/** The storage a packed `weight` tensor of this safetensors dtype was saved with. */
export function storageOfDtype(dtype: SafetensorsDtype): QuantStorage | undefined {
  return QUANT_STORAGES.find((s) => STORAGE[s].dtype === dtype);
}

/**
 * The dtype and shape bnb gives the packed weight of n elements: `[(n + 1) // (itemsize * 2), 1]`,
 * the same bytes reinterpreted. undefined when that floor division drops packed bytes (bnb would lose them).
 */
export function packedStorageShape(n: number, storage: QuantStorage): { dtype: SafetensorsDtype; shape: [number, number] } | undefined {
  const { dtype, itemsize } = STORAGE[storage];
  const rows = Math.floor((n + 1) / (itemsize * 2));
  return rows * itemsize === Math.ceil(n / 2) ? { dtype, shape: [rows, 1] } : undefined;
}

/**
 * The reverse, when loading: checks the stored packed tensor against n elements and says which
 * storage it uses; its raw bytes are the packed nibble stream whatever the dtype.
 */
export function storageOfPackedTensor(info: { dtype: SafetensorsDtype; shape: readonly number[] }, n: number, where: string): QuantStorage {
  const storage = storageOfDtype(info.dtype);
  if (storage === undefined) {
    throw new TunaError("MODEL_INVALID", `${where} is ${info.dtype}; a bitsandbytes 4-bit weight is stored as ${QUANT_STORAGES.map((s) => STORAGE[s].dtype).join(", ")}.`);
  }
  const expected = packedStorageShape(n, storage);
  const got = `[${info.shape.join(", ")}]`;
  if (expected === undefined) {
    throw new TunaError("MODEL_INVALID", `${where} packs ${n} values as ${storage}, which cannot hold ${Math.ceil(n / 2)} bytes whole; the checkpoint lost data.`);
  }
  if (info.shape.length === 2 && info.shape[0] === 1 && info.shape[1] === expected.shape[0] && expected.shape[0] > 1) {
    throw new TunaError("MODEL_INVALID", `${where} has the legacy transposed shape ${got}; tuna reads only the [N, 1] layout. Re-save the checkpoint with a current bitsandbytes.`);
  }
  if (info.shape.length !== 2 || info.shape[0] !== expected.shape[0] || info.shape[1] !== 1) {
    throw new TunaError("MODEL_INVALID", `${where} has shape ${got}, but ${n} values packed as ${storage} need [${expected.shape.join(", ")}].`);
  }
  return storage;
}
