// Tests of decodeToFloat32 / encodeFromFloat32 on hand-written little-endian bytes, including
// byte arrays that start at an offset unaligned to the element size.
import { test } from "node:test";
import assert from "node:assert/strict";
import { DECODABLE_DTYPES, decodeToFloat32, encodeFromFloat32 } from "../../../src/io/safetensors/convert.ts";
import type { SafetensorsDtype } from "../../../src/io/safetensors/dtypes.ts";
import { throwsWith } from "./fixtures.ts";

const CASES: [SafetensorsDtype, number[], number[]][] = [
  ["F32", [0, 0, 128, 63, 0, 0, 0, 192], [1, -2]],
  ["F16", [0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0x00, 0x7c], [1, -2, 2 ** -24, Infinity]],
  ["BF16", [0x80, 0x3f, 0x49, 0x40, 0x80, 0xff], [1, 3.140625, -Infinity]],
  ["F64", [0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0, 0, 0, 0, 0, 0, 0xf0, 0xbf], [1.5, -1]], // 0x3FF8..., 0xBFF0...
  ["I8", [0xff, 0x80, 0x7f], [-1, -128, 127]],
  ["U8", [0xff, 0x00], [255, 0]],
  ["I16", [0xfe, 0xff, 0x00, 0x80], [-2, -32768]],
  ["U16", [0xfe, 0xff], [65534]],
  ["I32", [0xff, 0xff, 0xff, 0xff, 0x00, 0x01, 0x00, 0x00], [-1, 256]],
  ["U32", [0xff, 0xff, 0xff, 0xff], [4294967296]], // 2^32 - 1 rounds to 2^32 in float32
  ["I64", [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 0, 0, 0], [-2, 2 ** 32]],
  ["U64", [0, 0, 0, 0, 0, 0, 0, 0x80], [2 ** 63]],
  ["BOOL", [0, 1, 2], [0, 1, 1]],
  ["F8_E4M3", [0x38, 0x7e, 0xc0, 0x01], [1, 448, -2, 2 ** -9]],
  ["F8_E5M2", [0x3c, 0x7c, 0xc0], [1, Infinity, -2]],
];

void test("decodes every supported dtype from little-endian bytes", () => {
  assert.deepEqual(CASES.map((c) => c[0]).sort(), [...DECODABLE_DTYPES].sort());
  for (const [dtype, bytes, expected] of CASES) {
    assert.deepEqual([...decodeToFloat32(Uint8Array.from(bytes), dtype)], expected, dtype);
  }
  const nan = decodeToFloat32(Uint8Array.from([0x7f, 0xff]), "F8_E4M3");
  assert.ok(Number.isNaN(nan[0]) && Number.isNaN(nan[1]));
});

void test("decodes bytes that start at an unaligned offset", () => {
  for (const [dtype, bytes, expected] of CASES) {
    const backing = new Uint8Array(bytes.length + 3);
    backing.set(bytes, 1);
    const unaligned = backing.subarray(1, 1 + bytes.length);
    assert.deepEqual([...decodeToFloat32(unaligned, dtype)], expected, dtype);
  }
});

void test("the result never aliases the input", () => {
  const bytes = Uint8Array.from([0, 0, 128, 63]);
  const out = decodeToFloat32(bytes, "F32");
  bytes[3] = 0;
  assert.equal(out[0], 1);
});

void test("unsupported dtypes and ragged lengths are errors", () => {
  for (const dtype of ["F4", "C64", "F8_E8M0", "F6_E2M3"] as const) {
    throwsWith(() => decodeToFloat32(new Uint8Array(8), dtype), "UNSUPPORTED", dtype);
  }
  throwsWith(() => decodeToFloat32(new Uint8Array(3), "F16"), "INTERNAL", "3 bytes");
  throwsWith(() => encodeFromFloat32(new Float32Array(1), "I8"), "UNSUPPORTED", "I8");
});

void test("encodes float32 to F32, F16, BF16 and F64 bytes with round-to-nearest-even", () => {
  const values = Float32Array.from([1, -2, 65520, 1 + 2 ** -8]);
  assert.deepEqual([...encodeFromFloat32(values, "F32")], [0, 0, 128, 63, 0, 0, 0, 192, 0, 0xf0, 0x7f, 0x47, 0, 0x80, 0x80, 0x3f]);
  // f16: 1 = 0x3c00, -2 = 0xc000, 65520 ties to infinity 0x7c00, 1 + 2^-8 = 0x3c04 exactly.
  assert.deepEqual([...encodeFromFloat32(values, "F16")], [0x00, 0x3c, 0x00, 0xc0, 0x00, 0x7c, 0x04, 0x3c]);
  // bf16: 65520 = 0x477ff000 rounds up to 0x4780 (65536); 1 + 2^-8 ties to even 0x3f80.
  assert.deepEqual([...encodeFromFloat32(values, "BF16")], [0x80, 0x3f, 0x00, 0xc0, 0x80, 0x47, 0x80, 0x3f]);
  assert.deepEqual([...decodeToFloat32(encodeFromFloat32(values, "F64"), "F64")], [...values]);
  // A subarray view encodes only its own elements.
  const view = values.subarray(1, 2);
  assert.deepEqual([...encodeFromFloat32(view, "F16")], [0x00, 0xc0]);
  assert.deepEqual([...encodeFromFloat32(view, "F32")], [0, 0, 0, 192]);
});
