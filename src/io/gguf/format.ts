// The GGUF container (version 3) as llama.cpp's ggml/include/gguf.h and gguf-py define it: a header of
// typed key-value metadata and tensor descriptions, then the tensor data, each tensor aligned.
// Little-endian throughout; strings are a u64 byte length and UTF-8 bytes without a terminator.
import { TunaError } from "../../util/errors.ts";

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** ggml tensor types tuna writes or reads (ggml.h's enum ggml_type values). */
export const GGML_TYPES = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  BF16: 30,
} as const;
export type GgmlTypeName = keyof typeof GGML_TYPES;

/** Elements per block and bytes per block of each type (ggml's type_traits blck_size / type_size). */
const BLOCKS: Record<GgmlTypeName, { elements: number; bytes: number }> = {
  F32: { elements: 1, bytes: 4 },
  F16: { elements: 1, bytes: 2 },
  BF16: { elements: 1, bytes: 2 },
  Q4_0: { elements: 32, bytes: 18 },
  Q4_1: { elements: 32, bytes: 20 },
  Q5_0: { elements: 32, bytes: 22 },
  Q5_1: { elements: 32, bytes: 24 },
  Q8_0: { elements: 32, bytes: 34 },
  Q2_K: { elements: 256, bytes: 84 },
  Q3_K: { elements: 256, bytes: 110 },
  Q4_K: { elements: 256, bytes: 144 },
  Q5_K: { elements: 256, bytes: 176 },
  Q6_K: { elements: 256, bytes: 210 },
};

export function ggmlTypeName(code: number): GgmlTypeName | undefined {
  return (Object.keys(GGML_TYPES) as GgmlTypeName[]).find((k) => GGML_TYPES[k] === code);
}

export function blockOf(type: GgmlTypeName): { elements: number; bytes: number } {
  return BLOCKS[type];
}

/**
 * Bytes of a tensor of `type` whose dimensions are `ne` (ggml order: ne[0] is the row length, the
 * innermost). Rows must hold whole blocks.
 */
export function ggmlTensorBytes(type: GgmlTypeName, ne: readonly number[]): number {
  const { elements, bytes } = BLOCKS[type];
  const row = ne[0] ?? 1;
  if (row % elements !== 0) throw new TunaError("INTERNAL", `a ${type} row of ${row} values is not a whole number of ${elements}-value blocks`);
  const rows = ne.slice(1).reduce((a, b) => a * b, 1);
  return (row / elements) * bytes * rows;
}

/** GGUF metadata value types (gguf.h's enum gguf_type). */
export const GGUF_VALUE_TYPES = {
  uint8: 0,
  int8: 1,
  uint16: 2,
  int16: 3,
  uint32: 4,
  int32: 5,
  float32: 6,
  bool: 7,
  string: 8,
  array: 9,
  uint64: 10,
  int64: 11,
  float64: 12,
} as const;
export type GgufScalarKind = Exclude<keyof typeof GGUF_VALUE_TYPES, "array">;

/** A metadata value with its GGUF type; 64-bit integers are bigint, other numbers number. */
export type GgufValue =
  | { kind: "uint8" | "int8" | "uint16" | "int16" | "uint32" | "int32" | "float32" | "float64"; value: number }
  | { kind: "uint64" | "int64"; value: bigint }
  | { kind: "bool"; value: boolean }
  | { kind: "string"; value: string }
  | { kind: "array"; itemKind: GgufScalarKind; values: (number | bigint | boolean | string)[] };

/** A tensor's description in the header: ggml dimensions (ne[0] innermost) and its offset in the data section. */
export interface GgufTensorInfo {
  name: string;
  ne: number[];
  type: GgmlTypeName;
  offset: number;
}

export const gguf = {
  u32: (value: number): GgufValue => ({ kind: "uint32", value }),
  i32: (value: number): GgufValue => ({ kind: "int32", value }),
  f32: (value: number): GgufValue => ({ kind: "float32", value }),
  bool: (value: boolean): GgufValue => ({ kind: "bool", value }),
  str: (value: string): GgufValue => ({ kind: "string", value }),
  strings: (values: string[]): GgufValue => ({ kind: "array", itemKind: "string", values }),
  f32s: (values: number[]): GgufValue => ({ kind: "array", itemKind: "float32", values }),
  i32s: (values: number[]): GgufValue => ({ kind: "array", itemKind: "int32", values }),
};
