// Decoding a tensor's raw little-endian bytes of any common safetensors dtype to float32, and
// encoding float32 back to F32/F16/BF16/F64 bytes. Scalar conversions live in util/half.ts.
import { TunaError } from "../../util/errors.ts";
import {
  bf16ToF32Array,
  f16ToF32Array,
  f32ToBf16Array,
  f32ToF16Array,
  f8E4M3ToF32Array,
  f8E5M2ToF32Array,
} from "../../util/half.ts";
import { dtypeBits, type SafetensorsDtype } from "./dtypes.ts";

export const DECODABLE_DTYPES: readonly SafetensorsDtype[] = [
  "F32", "F16", "BF16", "F64", "I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64", "BOOL", "F8_E4M3", "F8_E5M2",
];
export const ENCODABLE_DTYPES: readonly SafetensorsDtype[] = ["F32", "F16", "BF16", "F64"];

// safetensors is little-endian; typed-array views use the host order, which is little-endian on
// every platform Node ships for (x64, arm64). Checked once so a big-endian host fails loudly.
const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

interface TypedArrayCtor<T> {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): T;
  readonly BYTES_PER_ELEMENT: number;
}

/** A typed view of `bytes`, copying them first when their offset is not a multiple of the element size. */
function viewAs<T>(bytes: Uint8Array, Ctor: TypedArrayCtor<T>): T {
  const source = bytes.byteOffset % Ctor.BYTES_PER_ELEMENT === 0 ? bytes : bytes.slice();
  return new Ctor(source.buffer, source.byteOffset, source.byteLength / Ctor.BYTES_PER_ELEMENT);
}

/** Always returns a new array (never a view of `bytes`). 64-bit integers are rounded via float64. */
export function decodeToFloat32(bytes: Uint8Array, dtype: SafetensorsDtype): Float32Array {
  if (!DECODABLE_DTYPES.includes(dtype)) {
    throw new TunaError("UNSUPPORTED", `decoding ${dtype} tensors to float32 is not supported (supported: ${DECODABLE_DTYPES.join(", ")})`);
  }
  if (!HOST_IS_LITTLE_ENDIAN) throw new TunaError("UNSUPPORTED", "tuna needs a little-endian CPU to read safetensors data");
  const elementBytes = dtypeBits(dtype) / 8;
  if (bytes.byteLength % elementBytes !== 0) {
    throw new TunaError("INTERNAL", `${bytes.byteLength} bytes are not a whole number of ${dtype} elements (${elementBytes} bytes each)`);
  }
  switch (dtype) {
    case "F32": {
      const out = new Float32Array(bytes.byteLength / 4);
      new Uint8Array(out.buffer).set(bytes);
      return out;
    }
    case "F16":
      return f16ToF32Array(viewAs(bytes, Uint16Array));
    case "BF16":
      return bf16ToF32Array(viewAs(bytes, Uint16Array));
    case "F64":
      return new Float32Array(viewAs(bytes, Float64Array));
    case "I8":
      return new Float32Array(viewAs(bytes, Int8Array));
    case "U8":
      return new Float32Array(bytes);
    case "I16":
      return new Float32Array(viewAs(bytes, Int16Array));
    case "U16":
      return new Float32Array(viewAs(bytes, Uint16Array));
    case "I32":
      return new Float32Array(viewAs(bytes, Int32Array));
    case "U32":
      return new Float32Array(viewAs(bytes, Uint32Array));
    case "I64":
      return bigIntsToFloat32(viewAs(bytes, BigInt64Array));
    case "U64":
      return bigIntsToFloat32(viewAs(bytes, BigUint64Array));
    case "BOOL":
      return Float32Array.from(bytes, (b) => (b !== 0 ? 1 : 0));
    case "F8_E4M3":
      return f8E4M3ToF32Array(bytes);
    case "F8_E5M2":
      return f8E5M2ToF32Array(bytes);
    default:
      throw new TunaError("INTERNAL", `no decoder for ${dtype}`);
  }
}

function bigIntsToFloat32(values: BigInt64Array | BigUint64Array): Float32Array {
  const out = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = Number(values[i]!);
  return out;
}

/** Little-endian bytes of `values` in `dtype`, rounding to nearest even. Returns a new 8-byte-aligned array. */
export function encodeFromFloat32(values: Float32Array, dtype: SafetensorsDtype): Uint8Array {
  if (!HOST_IS_LITTLE_ENDIAN) throw new TunaError("UNSUPPORTED", "tuna needs a little-endian CPU to write safetensors data");
  switch (dtype) {
    case "F32":
      return new Uint8Array(values.slice().buffer);
    case "F16":
      return new Uint8Array(f32ToF16Array(values).buffer);
    case "BF16":
      return new Uint8Array(f32ToBf16Array(values).buffer);
    case "F64":
      return new Uint8Array(Float64Array.from(values).buffer);
    default:
      throw new TunaError("UNSUPPORTED", `encoding float32 to ${dtype} is not supported (supported: ${ENCODABLE_DTYPES.join(", ")})`);
  }
}
