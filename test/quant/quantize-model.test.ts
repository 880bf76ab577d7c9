// Tests of quantize-at-load over a tiny random Llama: only the decoder blocks' linear weights, one
// tensor read at a time, each equal to the blockwise quantizer's output; the chunked 16-bit path.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openWeights, type WeightSource } from "../../src/io/safetensors/checkpoint.ts";
import { parseModelConfig, type ModelConfig } from "../../src/hf/config.ts";
import { MODEL_PRESETS } from "../../src/hf/presets.ts";
import { writeRandomModel } from "../../src/hf/random-init.ts";
import { PROJECTIONS, projectionPrefix } from "../../src/hf/weights.ts";
import { quantize4bit } from "../../src/quant/blockwise.ts";
import { isNested } from "../../src/quant/bnb-checkpoint.ts";
import { doubleQuantizeAbsmax } from "../../src/quant/double-quant.ts";
import { quantizeLinearWeights, quantizeLinearWeightsInt8, quantizeTensor4bit } from "../../src/quant/quantize-model.ts";
import { bf16ToF32Array, f16ToF32Array, f32ToBf16Array, f32ToF16Array } from "../../src/util/half.ts";
import { assertTunaError, normalF32 } from "./helpers.ts";

// One tiny random model for the whole file (writing it is most of these tests' time).
let dir = "";
let source: WeightSource;
let cfg: ModelConfig;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "tuna-quant-model-"));
  await writeRandomModel(dir, MODEL_PRESETS["tiny-llama"]!, { seed: 11, dtype: "BF16" });
  source = await openWeights(dir);
  cfg = parseModelConfig(JSON.parse(await readFile(join(dir, "config.json"), "utf8")), "config.json");
});

after(async () => {
  await source.close();
  await rm(dir, { recursive: true, force: true });
});

/** Records every readTensor call, in order, into `events`. */
function spyOn(source: WeightSource, events: string[]): WeightSource {
  return {
    ...source,
    readTensor: (name) => {
      events.push(`read ${name}`);
      return source.readTensor(name);
    },
  };
}

void test("quantize at load: the 14 linear weights of tiny-llama, read one at a time, in order", async () => {
  const targets: string[] = [];
  for (let l = 0; l < 2; l++) for (const p of PROJECTIONS) targets.push(`${projectionPrefix(l, p)}.weight`);

  const events: string[] = [];
  const results = new Map<string, ReturnType<typeof quantizeTensor4bit>>();
  const iterator = quantizeLinearWeights(spyOn(source, events), cfg, { quantType: "nf4", doubleQuant: true }, (p) =>
    events.push(`done ${p.index + 1}/${p.total}`),
  );
  for await (const { name, quantized } of iterator) {
    events.push(`yield ${name}`);
    results.set(name, quantized);
  }
  // Each read is followed by its result before the next read: never more than one source tensor in flight.
  assert.deepEqual(events, targets.flatMap((name, i) => [`read ${name}`, `done ${i + 1}/14`, `yield ${name}`]));

  for (const name of targets) {
    const q = results.get(name)!;
    const info = source.info(name);
    assert.deepEqual(q.shape, info.shape);
    assert.equal(q.dtype, "bfloat16");
    assert.equal(q.blocksize, 64);
    assert.ok(isNested(q.absmax));
    const raw = await source.readTensor(name);
    const values = bf16ToF32Array(new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2));
    const direct = quantize4bit(values, "nf4", 64);
    assert.deepEqual(q.packed, direct.packed, name);
    assert.deepEqual(q.absmax, doubleQuantizeAbsmax(direct.absmax), name);
  }
});

void test("quantize at load refuses a blocksize or storage that bnb cannot use, before reading anything", async () => {
  const events: string[] = [];
  const spy = spyOn(source, events);
  const drain = async (iterable: AsyncIterable<unknown>): Promise<number> => {
    let count = 0;
    for await (const item of iterable) if (item !== undefined) count++;
    return count;
  };
  await assert.rejects(drain(quantizeLinearWeights(spy, cfg, { quantType: "fp4", doubleQuant: false, blocksize: 100 })), (e) =>
    assertTunaError(e, "CONFIG_INVALID", "100"),
  );
  // With C = F = 3, gate_proj is 3 x 3: 9 values, 5 packed bytes, which float32 elements cannot hold whole.
  const odd = { ...cfg, hiddenSize: 3, intermediateSize: 3 };
  await assert.rejects(drain(quantizeLinearWeights(spy, odd, { quantType: "nf4", doubleQuant: false, storage: "float32" })), (e) =>
    assertTunaError(e, "CONFIG_INVALID", "float32", "gate_proj"),
  );
  assert.deepEqual(events, []);
});

void test("16-bit weights are widened a chunk at a time with the same result as the float32 path", () => {
  const n = 65536 * 2 + 101; // past two chunks, with a partial block and an odd count
  const x = normalF32(n, 5, 0.02);
  for (const [dtype, bits, widen] of [
    ["BF16", f32ToBf16Array(x), bf16ToF32Array],
    ["F16", f32ToF16Array(x), f16ToF32Array],
  ] as const) {
    const widened = widen(bits);
    for (const blocksize of [64, 4096]) {
      const q = quantizeTensor4bit(new Uint8Array(bits.buffer), dtype, [n], { quantType: "fp4", doubleQuant: false, blocksize }, "w");
      const direct = quantize4bit(widened, "fp4", blocksize);
      assert.deepEqual(q.packed, direct.packed, `${dtype} ${blocksize}`);
      assert.deepEqual(q.absmax, direct.absmax, `${dtype} ${blocksize}`);
    }
  }
  assert.throws(
    () => quantizeTensor4bit(new Uint8Array(8), "I32", [2], { quantType: "nf4", doubleQuant: false }, `"w"`),
    (e) => assertTunaError(e, "MODEL_INVALID", `"w"`, "I32"),
  );
});

void test("load_in_8bit at load: LLM.int8 codes for the same 14 weights, one tensor at a time", async () => {
  const events: string[] = [];
  let count = 0;
  for await (const { name, quantized } of quantizeLinearWeightsInt8(spyOn(source, events), cfg)) {
    assert.equal(events.length, ++count, "one read per result");
    assert.equal(events.at(-1), `read ${name}`);
    assert.deepEqual(quantized.shape, source.info(name).shape);
    assert.equal(quantized.scb.length, quantized.shape[0]);
    assert.ok(quantized.weight.some((v) => v === 127 || v === -127));
  }
  assert.equal(count, 14);
});
