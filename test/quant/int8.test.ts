// Tests of LLM.int8 row-wise weights: the float16 cast, SCB, round-half-even codes, the dequant
// formula, and the Linear8bitLt key set written and read back.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { openWeightsFile } from "../../src/io/safetensors/checkpoint.ts";
import { writeSafetensors } from "../../src/io/safetensors/writer.ts";
import { dequantizeInt8Rowwise, int8TensorsToWrite, quantizeInt8Rowwise, readQuantized8bit } from "../../src/quant/int8.ts";
import { f32ToBf16Array } from "../../src/util/half.ts";
import { assertTunaError, normalF32, withTmpDir } from "./helpers.ts";

const f = Math.fround;
const bytes = (a: Float32Array | Uint16Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

void test("codes: round half to even of v * (127 / SCB), after the float16 cast", () => {
  // SCB = 127 makes the scale exactly 1, so each value's own rounding shows.
  // 2.5 + 2^-12 is above 2.5 in float32 (-> 3) but rounds to 2.5 in float16 (ulp 2^-9), then to even 2.
  const row = Float32Array.of(127, 0.5, 1.5, 2.5, -2.5, -3.5, 2.5 + 2 ** -12, NaN);
  const q = quantizeInt8Rowwise(bytes(row), "F32", 1, row.length, "w");
  assert.deepEqual([...q.scb], [127]);
  assert.deepEqual([...q.weight], [127, 0, 2, 2, -2, -4, 2, 0]);
});

void test("SCB per row is max |W| (NaN skipped), an all-zero row gives zeros, bf16 input", () => {
  const w = Float32Array.of(0.5, -1, 0.25, 0, 0, 0, 3, NaN, -0.75);
  const q = quantizeInt8Rowwise(bytes(f32ToBf16Array(w)), "BF16", 3, 3, "w");
  assert.deepEqual([...q.scb], [1, 0, 3]);
  assert.deepEqual([...q.weight], [64, -127, 32, 0, 0, 0, 127, 0, -32]); // 63.5 -> 64, 31.75 -> 32, -31.75 -> -32
  const back = dequantizeInt8Rowwise(q);
  const inv127 = f(7.874015718698502e-3);
  assert.deepEqual([...back], [...q.weight].map((v, i) => f(f(v * q.scb[Math.floor(i / 3)]!) * inv127)));
});

void test("round trip error is at most the float16 rounding plus half a step, SCB / 254, per row", () => {
  const rows = 16;
  const cols = 96;
  const w = normalF32(rows * cols, 4, 0.02);
  const q = quantizeInt8Rowwise(bytes(w), "F32", rows, cols, "w");
  const back = dequantizeInt8Rowwise(q);
  for (let i = 0; i < w.length; i++) {
    const scb = q.scb[Math.floor(i / cols)]!;
    const bound = Math.abs(w[i]!) * 2 ** -11 + (scb / 254) * (1 + 1e-6);
    assert.ok(Math.abs(back[i]! - w[i]!) <= bound, `element ${i}`);
  }
});

void test("the Linear8bitLt key set, written and read back; other layouts and missing SCB refused", async () => {
  await withTmpDir(async (dir) => {
    const w = normalF32(4 * 8, 6, 0.02);
    const q = quantizeInt8Rowwise(bytes(w), "F32", 4, 8, "w");
    const name = "model.layers.0.mlp.up_proj.weight";
    const tensors = int8TensorsToWrite(name, q);
    assert.deepEqual(
      tensors.map((t) => [t.name, t.dtype, t.shape]),
      [
        [name, "I8", [4, 8]],
        ["model.layers.0.mlp.up_proj.SCB", "F32", [4]],
        ["model.layers.0.mlp.up_proj.weight_format", "U8", []],
      ],
    );
    const path = join(dir, "model.safetensors");
    await writeSafetensors(path, tensors);
    let source = await openWeightsFile(path);
    assert.deepEqual(await readQuantized8bit(source, name, [4, 8]), q);
    await source.close();

    await writeSafetensors(path, tensors.map((t) => (t.name.endsWith("weight_format") ? { ...t, data: Uint8Array.of(1) } : t)));
    source = await openWeightsFile(path);
    await assert.rejects(readQuantized8bit(source, name, [4, 8]), (e) => assertTunaError(e, "MODEL_INVALID", "weight_format", "row"));
    await source.close();

    await writeSafetensors(path, tensors.filter((t) => !t.name.endsWith("SCB")));
    source = await openWeightsFile(path);
    await assert.rejects(readQuantized8bit(source, name, [4, 8]), (e) => assertTunaError(e, "MODEL_INVALID", "up_proj.SCB", "missing"));
    await source.close();
  });
});
