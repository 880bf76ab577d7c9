// The safetensors dtype strings, their sizes in bits, and their enum order (which the reference
// writer sorts by). The order and sizes follow huggingface/safetensors `Dtype` (see specs/safetensors.md 1.1).

export type SafetensorsDtype =
  | "BOOL"
  | "F4"
  | "F6_E2M3"
  | "F6_E3M2"
  | "U8"
  | "I8"
  | "F8_E5M2"
  | "F8_E4M3"
  | "F8_E8M0"
  | "F8_E4M3FNUZ"
  | "F8_E5M2FNUZ"
  | "I16"
  | "U16"
  | "F16"
  | "BF16"
  | "I32"
  | "U32"
  | "F32"
  | "C64"
  | "F64"
  | "I64"
  | "U64";

const DTYPE_BITS: Readonly<Record<SafetensorsDtype, number>> = {
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  F8_E4M3FNUZ: 8,
  F8_E5M2FNUZ: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
};

/** Every dtype in the reference enum order (the writer sorts tensors by this order, descending). */
export const SAFETENSORS_DTYPES: readonly SafetensorsDtype[] = [
  "BOOL",
  "F4",
  "F6_E2M3",
  "F6_E3M2",
  "U8",
  "I8",
  "F8_E5M2",
  "F8_E4M3",
  "F8_E8M0",
  "F8_E4M3FNUZ",
  "F8_E5M2FNUZ",
  "I16",
  "U16",
  "F16",
  "BF16",
  "I32",
  "U32",
  "F32",
  "C64",
  "F64",
  "I64",
  "U64",
];

const DTYPE_RANK: ReadonlyMap<string, number> = new Map(SAFETENSORS_DTYPES.map((d, i) => [d, i]));

/** Size of one element in bits (4 and 6 for the sub-byte float formats). */
export function dtypeBits(dtype: SafetensorsDtype): number {
  return DTYPE_BITS[dtype];
}

export function isSafetensorsDtype(s: string): s is SafetensorsDtype {
  return DTYPE_RANK.has(s);
}

/** Position of the dtype in the reference enum order (BOOL = 0 ... U64 = 21). */
export function dtypeRank(dtype: SafetensorsDtype): number {
  return DTYPE_RANK.get(dtype) ?? -1;
}

/**
 * Byte size of a tensor, or undefined when the element count times the bit size is not a whole
 * number of bytes. Uses BigInt so that absurd shapes from a corrupt header cannot overflow silently.
 */
export function tensorByteSize(dtype: SafetensorsDtype, shape: readonly number[]): bigint | undefined {
  let bits = BigInt(DTYPE_BITS[dtype]);
  for (const d of shape) bits *= BigInt(d);
  return bits % 8n === 0n ? bits / 8n : undefined;
}
