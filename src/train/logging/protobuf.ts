// The few protobuf wire encodings that tfevents records need: varints, fixed64 doubles, fixed32
// floats and length-delimited fields. Written by hand: tuna emits four message types (Event,
// Summary, SummaryMetadata, TensorProto) and only encodes them, so a protobuf library with its schema
// compiler would add a dependency and a build step for ~60 lines of arithmetic.
import { TunaError } from "../../util/errors.ts";

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LENGTH_DELIMITED = 2;
const WIRE_FIXED32 = 5;

const UINT64_MAX = (1n << 64n) - 1n;

/**
 * Base-128 varint of an integer. Negative values are written as their 64-bit two's complement
 * (10 bytes), as protobuf does for int64. Accepts safe-integer numbers or bigints in
 * [-2^63, 2^64 - 1].
 */
export function encodeVarint(value: number | bigint): Uint8Array {
  if (typeof value === "number" && !Number.isSafeInteger(value)) {
    throw new TunaError("INTERNAL", `protobuf varint: ${value} is not a safe integer; pass a bigint for values beyond 2^53.`);
  }
  const big = BigInt(value);
  if (big < -(1n << 63n) || big > UINT64_MAX) {
    throw new TunaError("INTERNAL", `protobuf varint: ${big} does not fit in 64 bits.`);
  }
  let rest = BigInt.asUintN(64, big);
  const bytes: number[] = [];
  while (rest >= 0x80n) {
    bytes.push(Number(rest & 0x7fn) | 0x80);
    rest >>= 7n;
  }
  bytes.push(Number(rest));
  return Uint8Array.from(bytes);
}

function fieldKey(fieldNumber: number, wireType: number): Uint8Array {
  return encodeVarint(fieldNumber * 8 + wireType);
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** An int64/uint64/int32/enum/bool field (wire type 0). */
export function varintField(fieldNumber: number, value: number | bigint): Uint8Array {
  return concatBytes([fieldKey(fieldNumber, WIRE_VARINT), encodeVarint(value)]);
}

/** A `double` field: IEEE 754 binary64, little-endian (wire type 1). */
export function doubleField(fieldNumber: number, value: number): Uint8Array {
  const payload = new Uint8Array(8);
  new DataView(payload.buffer).setFloat64(0, value, true);
  return concatBytes([fieldKey(fieldNumber, WIRE_FIXED64), payload]);
}

/** A `float` field: the value rounded to binary32, little-endian (wire type 5). */
export function floatField(fieldNumber: number, value: number): Uint8Array {
  const payload = new Uint8Array(4);
  new DataView(payload.buffer).setFloat32(0, value, true);
  return concatBytes([fieldKey(fieldNumber, WIRE_FIXED32), payload]);
}

/** A `bytes` field or an embedded message (wire type 2): length varint, then the bytes. */
export function bytesField(fieldNumber: number, bytes: Uint8Array): Uint8Array {
  return concatBytes([fieldKey(fieldNumber, WIRE_LENGTH_DELIMITED), encodeVarint(bytes.length), bytes]);
}

/** A `string` field: its UTF-8 bytes, length-delimited. */
export function stringField(fieldNumber: number, text: string): Uint8Array {
  return bytesField(fieldNumber, new TextEncoder().encode(text));
}
