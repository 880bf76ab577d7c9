// The benchmark's synthetic weights: the pre-quantized NF4 + double-quant key set is what bitsandbytes saves and
// readQuantized4bit accepts, dequantizing to finite values in the planned range; dense tensors are N(0, 0.02^2).
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeToFloat32 } from "../../src/io/safetensors/convert.ts";
import { parseModelConfig } from "../../src/hf/config.ts";
import { absmaxOf, dequantizeQuantized4bit, quantizedTensorsToWrite, readQuantized4bit } from "../../src/quant/bnb-checkpoint.ts";
import { NF4_CODE, dynamicMap } from "../../src/quant/codes.ts";
import { benchConfigJson } from "../../tools/bench/gpu/models.ts";
import { createSyntheticPools, createSyntheticWeights, NESTED_ABSMAX_MIN, NESTED_ABSMAX_SPREAD, NESTED_OFFSET } from "../../tools/bench/gpu/synthetic-weights.ts";

const pools = createSyntheticPools(1 << 20, 11);
// The tiny shape, widened so one weight has enough values for distribution checks.
const shapeJson = { hidden_size: 256, intermediate_size: 704, num_attention_heads: 4, num_key_value_heads: 2 };
const qcfg = parseModelConfig({ ...benchConfigJson("tiny", "qlora"), ...shapeJson }, "qlora config");
const dcfg = parseModelConfig({ ...benchConfigJson("tiny", "lora"), ...shapeJson }, "lora config");

function stats(x: Float32Array): { mean: number; std: number; maxAbs: number } {
  let s = 0;
  let s2 = 0;
  let maxAbs = 0;
  for (const v of x) {
    s += v;
    s2 += v * v;
    maxAbs = Math.max(maxAbs, Math.abs(v));
  }
  const mean = s / x.length;
  return { mean, std: Math.sqrt(s2 / x.length - mean * mean), maxAbs };
}

void test("the config carries bnb's 4-bit NF4 double-quant quantization_config", () => {
  const q = qcfg.quantization;
  assert.ok(q !== null);
  assert.equal(q.loadIn4bit, true);
  assert.equal(q.quantType, "nf4");
  assert.equal(q.useDoubleQuant, true);
  assert.equal(q.computeDtype, "bfloat16");
  assert.equal(dcfg.quantization, null);
});

void test("a pre-quantized Linear is read by readQuantized4bit and dequantizes to finite values in range", async () => {
  const source = createSyntheticWeights(qcfg, pools, "synthetic");
  const name = "model.layers.1.mlp.down_proj.weight";
  const shape = [256, 704];
  const q = await readQuantized4bit(source, name, qcfg.quantization!, shape);
  assert.equal(q.quantType, "nf4");
  assert.equal(q.blocksize, 64);
  assert.equal(q.dtype, "bfloat16");
  assert.equal(q.storage, "uint8");
  assert.deepEqual(q.shape, shape);

  // The same key set, dtypes and shapes bnb writes for this weight.
  const written = quantizedTensorsToWrite(name, q);
  assert.deepEqual(
    written.map((t) => t.name).sort(),
    source.names().filter((n) => n === name || n.startsWith(`${name}.`)),
  );
  for (const t of written) {
    const info = source.info(t.name);
    assert.equal(info.dtype, t.dtype, t.name);
    assert.deepEqual(info.shape, t.shape, t.name);
  }

  // absmax per block from its definition: dynamicMap[code] * nested_absmax[block / 256] + offset.
  const codes = await source.readTensor(`${name}.absmax`);
  const nested = decodeToFloat32(await source.readTensor(`${name}.nested_absmax`), "F32");
  const absmax = absmaxOf(q);
  const blocks = (256 * 704) / 64;
  assert.equal(absmax.length, blocks);
  let sumSquares = 0;
  for (let k = 0; k < blocks; k++) {
    const n = nested[Math.floor(k / 256)]!;
    assert.ok(n >= NESTED_ABSMAX_MIN && n < NESTED_ABSMAX_MIN + NESTED_ABSMAX_SPREAD);
    const expected = dynamicMap()[codes[k]!]! * n + NESTED_OFFSET;
    assert.ok(Math.abs(absmax[k]! - expected) < 1e-6, `block ${k}: ${absmax[k]} vs ${expected}`);
    assert.ok(absmax[k]! > 0.03 && absmax[k]! < 0.07);
    sumSquares += absmax[k]! ** 2;
  }

  const w = dequantizeQuantized4bit(q);
  assert.equal(w.length, 256 * 704);
  assert.ok(w.every(Number.isFinite));
  const s = stats(w);
  assert.ok(s.maxAbs <= 0.07, `max |w| ${s.maxAbs}`);
  // Uniform random codes: E[w^2] = mean(NF4^2) * mean(absmax^2).
  const nf4Square = NF4_CODE.reduce((a, c) => a + c * c, 0) / 16;
  const expectedStd = Math.sqrt(nf4Square * (sumSquares / blocks));
  assert.ok(Math.abs(s.std / expectedStd - 1) < 0.05, `std ${s.std} vs ${expectedStd}`);
  assert.ok(Math.abs(s.mean) < 0.002);
  // Embeddings and norms are not quantized.
  assert.equal(source.info("model.embed_tokens.weight").dtype, "BF16");
  assert.equal(source.has("model.layers.0.self_attn.q_proj.weight.absmax"), true);
  assert.equal(source.has("model.layers.0.input_layernorm.weight.absmax"), false);
});

void test("dense weights: bf16 N(0, 0.02^2) from the pool, norm weights one, fresh arrays per read", async () => {
  const source = createSyntheticWeights(dcfg, pools, "synthetic");
  assert.equal(source.has("model.layers.0.mlp.gate_proj.weight.absmax"), false);
  const info = source.info("model.layers.0.mlp.gate_proj.weight");
  assert.equal(info.dtype, "BF16");
  assert.deepEqual(info.shape, [704, 256]);
  const bytes = await source.readTensor(info.name);
  assert.equal(bytes.byteLength, 704 * 256 * 2);
  const s = stats(decodeToFloat32(bytes, "BF16"));
  assert.ok(Math.abs(s.std - 0.02) < 0.001, `std ${s.std}`);
  assert.ok(Math.abs(s.mean) < 0.001);
  // Tensors start at different places of the pool.
  const other = await source.readTensor("model.layers.0.mlp.up_proj.weight");
  assert.notDeepEqual(other.subarray(0, 64), bytes.subarray(0, 64));
  // A tensor bigger than the 1 MiB pool (the 32000 x 256 embedding) wraps around it.
  const embed = decodeToFloat32(await source.readTensor("model.embed_tokens.weight"), "BF16");
  assert.equal(embed.length, 32000 * 256);
  assert.ok(embed.every(Number.isFinite));
  const norm = decodeToFloat32(await source.readTensor("model.norm.weight"), "BF16");
  assert.deepEqual([...norm], new Array<number>(256).fill(1));
  bytes.fill(0);
  assert.notDeepEqual(await source.readTensor(info.name), bytes);
  await assert.rejects(source.readTensor("nope"), /has no tensor named "nope"/);
});
