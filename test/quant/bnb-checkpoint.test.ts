// Tests of pre-quantized bnb 4-bit checkpoints: the exact key set written, reading it back from a
// safetensors file (plain and nested, uint8 and bf16 storage), and every missing or inconsistent tensor.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { openWeightsFile } from "../../src/io/safetensors/checkpoint.ts";
import { writeSafetensors, type TensorToWrite } from "../../src/io/safetensors/writer.ts";
import type { BnbQuantizationConfig } from "../../src/hf/config.ts";
import {
  dequantizeQuantized4bit,
  quantizedTensorsToWrite,
  readQuantized4bit,
  type Quantized4bit,
} from "../../src/quant/bnb-checkpoint.ts";
import { dequantize4bit } from "../../src/quant/blockwise.ts";
import { dequantizeNestedAbsmax } from "../../src/quant/double-quant.ts";
import { quantizeTensor4bit } from "../../src/quant/quantize-model.ts";
import { assertTunaError, normalF32, withTmpDir } from "./helpers.ts";

const CFG: BnbQuantizationConfig = {
  quantMethod: "bitsandbytes",
  loadIn4bit: true,
  loadIn8bit: false,
  quantType: "nf4",
  useDoubleQuant: true,
  computeDtype: "bfloat16",
  quantStorage: "uint8",
  skipModules: [],
};

const Q = "model.layers.0.self_attn.q_proj.weight";
const DOWN = "model.layers.0.mlp.down_proj.weight";

function quantized(shape: [number, number], seed: number, options: Parameters<typeof quantizeTensor4bit>[3]): Quantized4bit {
  const x = normalF32(shape[0] * shape[1], seed, 0.02);
  return quantizeTensor4bit(new Uint8Array(x.buffer), "F32", shape, options, "test weight");
}

const specOf = (t: TensorToWrite): [string, string, number[]] => [t.name, t.dtype, [...t.shape]];

void test("the key set bnb saves, nested or not, in quant_storage uint8 and bfloat16", () => {
  const plain = quantized([8, 40], 1, { quantType: "nf4", doubleQuant: false });
  const plainJson = `{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [8, 40]}`;
  assert.deepEqual(quantizedTensorsToWrite(Q, plain).map(specOf), [
    [Q, "U8", [160, 1]],
    [`${Q}.absmax`, "F32", [5]],
    [`${Q}.quant_map`, "F32", [16]],
    [`${Q}.quant_state.bitsandbytes__nf4`, "U8", [plainJson.length]],
  ]);
  const state = quantizedTensorsToWrite(Q, plain)[3]!;
  assert.equal(new TextDecoder().decode(state.data), plainJson);

  const nested = quantized([4, 64], 2, { quantType: "fp4", doubleQuant: true, storage: "bfloat16" });
  const tensors = quantizedTensorsToWrite(DOWN, nested);
  assert.deepEqual(tensors.slice(0, 5).map(specOf), [
    [DOWN, "BF16", [64, 1]],
    [`${DOWN}.absmax`, "U8", [4]],
    [`${DOWN}.quant_map`, "F32", [16]],
    [`${DOWN}.nested_absmax`, "F32", [1]],
    [`${DOWN}.nested_quant_map`, "F32", [256]],
  ]);
  assert.equal(tensors[5]!.name, `${DOWN}.quant_state.bitsandbytes__fp4`);
  assert.match(new TextDecoder().decode(tensors[5]!.data), /^\{"quant_type": "fp4", "blocksize": 64, "dtype": "float32", "shape": \[4, 64\], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": [0-9.e-]+\}$/);
  // bnb's fp4 quant_map holds +0.0 at code 8 (from the Python int -0).
  assert.deepEqual([...tensors[2]!.data.subarray(32, 36)], [0, 0, 0, 0]);
  // The same packed bytes whatever the storage view.
  assert.deepEqual(tensors[0]!.data, nested.packed);
});

void test("a pre-quantized checkpoint reads back field for field and dequantizes identically", async () => {
  await withTmpDir(async (dir) => {
    const plain = quantized([8, 40], 3, { quantType: "nf4", doubleQuant: false });
    const nested = quantized([4, 64], 4, { quantType: "fp4", doubleQuant: true, storage: "bfloat16" });
    const bias: TensorToWrite = { name: "model.layers.0.self_attn.q_proj.bias", dtype: "F32", shape: [8], data: new Uint8Array(32) };
    const path = join(dir, "model.safetensors");
    await writeSafetensors(path, [...quantizedTensorsToWrite(Q, plain), bias, ...quantizedTensorsToWrite(DOWN, nested)]);
    const source = await openWeightsFile(path);
    try {
      const readPlain = await readQuantized4bit(source, Q, CFG, [8, 40]);
      assert.deepEqual(readPlain, plain);
      const readNested = await readQuantized4bit(source, DOWN, CFG, [4, 64]);
      assert.equal(readNested.storage, "bfloat16");
      assert.deepEqual(readNested, nested);
      assert.deepEqual(dequantizeQuantized4bit(readNested), dequantizeQuantized4bit(nested));
      assert.ok(!(readNested.absmax instanceof Float32Array));
      const absmax = dequantizeNestedAbsmax(readNested.absmax);
      assert.deepEqual(dequantizeQuantized4bit(readNested), dequantize4bit(nested.packed, absmax, 256, "fp4", 64));
    } finally {
      await source.close();
    }
  });
});

void test("missing and inconsistent tensors are MODEL_INVALID and name the tensor", async () => {
  await withTmpDir(async (dir) => {
    const plain = quantized([8, 40], 5, { quantType: "nf4", doubleQuant: false });
    const nested = quantized([4, 64], 6, { quantType: "nf4", doubleQuant: true });
    const full = quantizedTensorsToWrite(Q, plain);
    const cases: [string, TensorToWrite[], string[], readonly number[]][] = [
      ["no absmax", full.filter((t) => t.name !== `${Q}.absmax`), [`${Q}.absmax`, "missing"], [8, 40]],
      ["no quant_state", full.filter((t) => !t.name.includes("quant_state")), [`${Q}.quant_state.bitsandbytes__nf4`], [8, 40]],
      ["no packed weight", full.filter((t) => t.name !== Q), [`"${Q}"`, "missing"], [8, 40]],
      ["absmax too short", full.map((t) => (t.name === `${Q}.absmax` ? { ...t, shape: [4], data: t.data.subarray(0, 16) } : t)), ["absmax", "F32 [5]"], [8, 40]],
      ["packed too short", full.map((t) => (t.name === Q ? { ...t, shape: [159, 1], data: t.data.subarray(0, 159) } : t)), ["[160, 1]"], [8, 40]],
      ["shape differs from the config", full, ["[8, 40]", "[40, 8]"], [40, 8]],
      ["nested without nested_absmax", quantizedTensorsToWrite(Q, nested).filter((t) => !t.name.endsWith("nested_absmax")), ["nested_absmax", "missing"], [4, 64]],
      ["nf4 and fp4 states", [...full, { ...full[3]!, name: `${Q}.quant_state.bitsandbytes__fp4` }], ["both"], [8, 40]],
    ];
    for (const [label, tensors, fragments, shape] of cases) {
      const path = join(dir, `${label.replaceAll(" ", "-")}.safetensors`);
      await writeSafetensors(path, tensors);
      const source = await openWeightsFile(path);
      try {
        await assert.rejects(readQuantized4bit(source, Q, CFG, shape), (e) => assertTunaError(e, "MODEL_INVALID", Q, ...fragments), label);
      } finally {
        await source.close();
      }
    }
    const path = join(dir, "ok.safetensors");
    await writeSafetensors(path, full);
    const source = await openWeightsFile(path);
    await assert.rejects(readQuantized4bit(source, Q, { ...CFG, loadIn4bit: false, loadIn8bit: true }, [8, 40]), (e) => assertTunaError(e, "MODEL_INVALID", "load_in_4bit"));
    await source.close();
  });
});

void test("writing refuses a storage view that would drop packed bytes", () => {
  const q = quantized([2, 3], 7, { quantType: "nf4", doubleQuant: false, storage: "float32" });
  assert.throws(() => quantizedTensorsToWrite("m.weight", q), (e) => assertTunaError(e, "UNSUPPORTED", "uint8"));
});
