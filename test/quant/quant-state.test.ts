// Tests of the quant_state JSON bytes (Python json.dumps / repr(float)) and the quant_storage views.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  packQuantState,
  packedStorageShape,
  pythonFloatRepr,
  quantStateKey,
  storageOfPackedTensor,
  unpackQuantState,
} from "../../src/quant/quant-state.ts";
import { assertTunaError } from "./helpers.ts";

const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

void test("pythonFloatRepr writes what Python's repr(float) writes", () => {
  const cases: [number, string][] = [
    [0, "0.0"],
    [-0, "-0.0"],
    [2, "2.0"],
    [-0.5, "-0.5"],
    [123.456, "123.456"],
    [0.001, "0.001"],
    [0.0001, "0.0001"],
    [1e-5, "1e-05"],
    [1.5e-7, "1.5e-07"],
    [1234567890123456, "1234567890123456.0"],
    [1e16, "1e+16"],
    [1e22, "1e+22"],
    [12345678901234567890, "1.2345678901234567e+19"],
    [1e-310, "1e-310"],
    [5e-324, "5e-324"],
    [Math.fround(0.1), "0.10000000149011612"], // np.float32(0.1).item()
    [Math.fround(1e-5), "9.999999747378752e-06"],
    [NaN, "NaN"],
    [Infinity, "Infinity"],
    [-Infinity, "-Infinity"],
  ];
  for (const [x, expected] of cases) assert.equal(pythonFloatRepr(x), expected, `repr(${x})`);
});

void test("quant_state JSON: byte for byte what bnb's pack_dict_to_tensor writes", () => {
  const plain = packQuantState({ quantType: "nf4", blocksize: 64, dtype: "bfloat16", shape: [4096, 4096] });
  assert.equal(text(plain), `{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [4096, 4096]}`);
  assert.ok(plain instanceof Uint8Array);
  const nested = packQuantState({
    quantType: "fp4",
    blocksize: 128,
    dtype: "float16",
    shape: [11008, 4096],
    nested: { blocksize: 256, dtype: "float32", offset: Math.fround(0.1) },
  });
  assert.equal(
    text(nested),
    `{"quant_type": "fp4", "blocksize": 128, "dtype": "float16", "shape": [11008, 4096], ` +
      `"nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.10000000149011612}`,
  );
  assert.equal(quantStateKey("nf4"), "quant_state.bitsandbytes__nf4");
});

void test("quant_state JSON: unpacking gives the fields back, the offset as float32", () => {
  const state = { quantType: "nf4", blocksize: 64, dtype: "float32", shape: [3, 5], nested: { blocksize: 256, dtype: "float32", offset: Math.fround(0.0123) } } as const;
  assert.deepEqual(unpackQuantState(packQuantState({ ...state, shape: [3, 5] }), "t"), { ...state, shape: [3, 5] });
  const fromPython = new TextEncoder().encode(
    `{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [8, 2], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.1}`,
  );
  assert.equal(unpackQuantState(fromPython, "t").nested?.offset, Math.fround(0.1));
});

void test("quant_state JSON: malformed states are MODEL_INVALID and name the tensor", () => {
  const bad = (json: string, ...fragments: string[]): void => {
    assert.throws(
      () => unpackQuantState(new TextEncoder().encode(json), `"layer.weight"`),
      (e) => assertTunaError(e, "MODEL_INVALID", `"layer.weight"`, ...fragments),
    );
  };
  bad(`{"quant_type": "nf4", "blocksize": 48, "dtype": "bfloat16", "shape": [2]}`, "blocksize 48");
  bad(`{"quant_type": "int4", "blocksize": 64, "dtype": "bfloat16", "shape": [2]}`, "int4");
  bad(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float64", "shape": [2]}`, "float64");
  bad(`{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [2.5]}`, "shape");
  bad(`{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [2], "nested_blocksize": 256}`, "nested_offset");
  bad(`{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [2], "nested_blocksize": 256, "nested_dtype": "float16", "nested_offset": 1}`, "float16");
  bad(`not json`, "JSON");
});

void test("quant_storage views: shape [(n + 1) // (itemsize * 2), 1], refused when bytes would be lost", () => {
  const n = 4096 * 4096;
  assert.deepEqual(packedStorageShape(n, "uint8"), { dtype: "U8", shape: [8388608, 1] });
  assert.deepEqual(packedStorageShape(n, "bfloat16"), { dtype: "BF16", shape: [4194304, 1] });
  assert.deepEqual(packedStorageShape(n, "float16"), { dtype: "F16", shape: [4194304, 1] });
  assert.deepEqual(packedStorageShape(n, "float32"), { dtype: "F32", shape: [2097152, 1] });
  assert.deepEqual(packedStorageShape(5, "uint8"), { dtype: "U8", shape: [3, 1] });
  assert.equal(packedStorageShape(5, "bfloat16"), undefined); // 3 packed bytes, 1 bf16 element
  assert.equal(packedStorageShape(12, "float32"), undefined); // 6 packed bytes, 1 float32
  assert.deepEqual(packedStorageShape(16, "float32"), { dtype: "F32", shape: [2, 1] });
});

void test("quant_storage views, reversed when loading", () => {
  assert.equal(storageOfPackedTensor({ dtype: "U8", shape: [8, 1] }, 16, "w"), "uint8");
  assert.equal(storageOfPackedTensor({ dtype: "BF16", shape: [4, 1] }, 16, "w"), "bfloat16");
  assert.equal(storageOfPackedTensor({ dtype: "F32", shape: [2, 1] }, 16, "w"), "float32");
  assert.throws(() => storageOfPackedTensor({ dtype: "F64", shape: [1, 1] }, 16, `"w"`), (e) => assertTunaError(e, "MODEL_INVALID", `"w"`, "F64"));
  assert.throws(() => storageOfPackedTensor({ dtype: "U8", shape: [7, 1] }, 16, `"w"`), (e) => assertTunaError(e, "MODEL_INVALID", "[8, 1]"));
  assert.throws(() => storageOfPackedTensor({ dtype: "U8", shape: [1, 8] }, 16, `"w"`), (e) => assertTunaError(e, "MODEL_INVALID", "transposed"));
  assert.throws(() => storageOfPackedTensor({ dtype: "BF16", shape: [1, 1] }, 5, `"w"`), (e) => assertTunaError(e, "MODEL_INVALID", "bfloat16"));
});
