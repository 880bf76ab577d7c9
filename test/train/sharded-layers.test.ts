// ZeRO-3's sharded load and per-layer gather, in one process: W ranks (each its own CPU backend) load a tiny
// model reading only their shares, then gather layers through an in-memory all-gather. Every gathered tensor
// must be byte for byte what a one-process load holds (dense f32 / bf16, 4-bit codes and absmax with and
// without double quantization, a pre-quantized bitsandbytes checkpoint, 8-bit, biases), whatever the order of
// acquires, with and without the prefetch being the layer asked for.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCpuBackend } from "../../src/backend/cpu/index.ts";
import type { Backend, Tensor } from "../../src/backend/types.ts";
import { parseModelConfig, type ModelConfig } from "../../src/hf/config.ts";
import type { HfConfigJson } from "../../src/hf/presets.ts";
import { writeRandomModel } from "../../src/hf/random-init.ts";
import { PROJECTIONS, expectedWeights } from "../../src/hf/weights.ts";
import { openWeights } from "../../src/io/safetensors/checkpoint.ts";
import { writeSafetensors, type TensorToWrite } from "../../src/io/safetensors/writer.ts";
import { makeLoraSettings } from "../../src/lora/settings.ts";
import { loadCausalLmParams, type LoadOptions } from "../../src/model/causal-lm/load.ts";
import type { LayerParams, CausalLmParams } from "../../src/model/causal-lm/params.ts";
import { quantizedTensorsToWrite } from "../../src/quant/bnb-checkpoint.ts";
import { quantizeTensor4bit } from "../../src/quant/quantize-model.ts";
import { createLayerSharder, type ShardedLayers } from "../../src/train/sharded-layers.ts";
import { worldGroup } from "../../src/dist/gather-group.ts";
import { memoryGroup } from "../dist/memory-group.ts";
import { bytesOf } from "../../src/util/bytes.ts";

// Sizes that do not split evenly (so the last shares carry padding), and biases on every projection.
const CONFIG: HfConfigJson = {
  model_type: "llama",
  vocab_size: 64,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-5,
  tie_word_embeddings: true,
  attention_bias: true,
  mlp_bias: true,
  initializer_range: 0.3,
};

async function writeModel(dtype: "F32" | "BF16"): Promise<{ dir: string; cfg: ModelConfig }> {
  const dir = join(await mkdtemp(join(tmpdir(), "tuna-zero3-")), "model");
  await writeRandomModel(dir, CONFIG, { seed: 7, dtype });
  return { dir, cfg: parseModelConfig(CONFIG, "tiny") };
}

/** The model re-saved as bitsandbytes 4-bit (nested absmax when doubleQuant), as Linear4bit writes it. */
async function writePrequantized(dir: string, cfg: ModelConfig, quantType: "nf4" | "fp4", doubleQuant: boolean): Promise<{ dir: string; cfg: ModelConfig }> {
  const out = `${dir}-bnb-${quantType}-${doubleQuant}`;
  await mkdir(out);
  const weights = await openWeights(dir);
  const tensors: TensorToWrite[] = [];
  for (const w of expectedWeights(cfg)) {
    const bytes = await weights.readTensor(w.name);
    if (w.quantizable) tensors.push(...quantizedTensorsToWrite(w.name, quantizeTensor4bit(bytes, "F32", w.shape, { quantType, doubleQuant }, w.name)));
    else tensors.push({ name: w.name, dtype: "F32", shape: w.shape, data: bytes });
  }
  await weights.close();
  await writeSafetensors(join(out, "model.safetensors"), tensors);
  const hf = JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  hf["quantization_config"] = { quant_method: "bitsandbytes", load_in_4bit: true, bnb_4bit_quant_type: quantType, bnb_4bit_use_double_quant: doubleQuant };
  await writeFile(join(out, "config.json"), JSON.stringify(hf));
  return { dir: out, cfg: parseModelConfig(hf, "prequantized") };
}

/** Layer l's frozen projection tensors by name. */
function frozenOf(layer: LayerParams): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const p of PROJECTIONS) {
    const lin = layer.proj[p];
    if (lin.weight !== null) out.set(`${p}.weight`, lin.weight);
    if (lin.quant !== null) {
      out.set(`${p}.packed`, lin.quant.packed);
      out.set(`${p}.absmax`, lin.quant.absmax);
    }
    if (lin.bias !== null) out.set(`${p}.bias`, lin.bias);
  }
  return out;
}

async function bytesOfLayer(be: Backend, layer: LayerParams): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const [name, t] of frozenOf(layer)) out.set(name, bytesOf(await be.download(t)).slice());
  return out;
}

interface Rank {
  be: Backend;
  params: CausalLmParams;
  sharded: ShardedLayers;
}

async function loadRanks(dir: string, cfg: ModelConfig, world: number, options: Omit<LoadOptions, "mode">): Promise<Rank[]> {
  const group = memoryGroup(world);
  const lora = makeLoraSettings({ r: 4, alpha: 8, dropout: 0, targetModules: "all-linear" }, cfg);
  return Promise.all(
    Array.from({ length: world }, async (_, rank) => {
      const be = createCpuBackend();
      const collective = group(rank);
      const sharder = createLayerSharder(be, worldGroup(collective));
      const weights = await openWeights(dir);
      const params = await loadCausalLmParams(be, cfg, weights, { mode: "lora", lora, ...options, shard: sharder.load });
      await weights.close();
      return { be, params, sharded: sharder.residency(params.layers) };
    }),
  );
}

const CASES: { label: string; dtype: "F32" | "BF16"; options: Omit<LoadOptions, "mode">; prequantized?: { quantType: "nf4" | "fp4"; doubleQuant: boolean } }[] = [
  { label: "LoRA, f32 base", dtype: "F32", options: { baseDtype: "f32" } },
  { label: "LoRA, bf16 base from a bf16 checkpoint (bytes as stored)", dtype: "BF16", options: { baseDtype: "bf16" } },
  { label: "LoRA, bf16 base from an f32 checkpoint (rounded per share)", dtype: "F32", options: { baseDtype: "bf16" } },
  { label: "QLoRA NF4 + double quant, quantized at load from bf16", dtype: "BF16", options: { baseDtype: "bf16", quantize: { kind: "4bit", quantType: "nf4", doubleQuant: true } } },
  { label: "QLoRA FP4, quantized at load from f32", dtype: "F32", options: { baseDtype: "f32", quantize: { kind: "4bit", quantType: "fp4", doubleQuant: false } } },
  { label: "a pre-quantized NF4 + double quant checkpoint", dtype: "F32", options: { baseDtype: "f32" }, prequantized: { quantType: "nf4", doubleQuant: true } },
  { label: "a pre-quantized FP4 checkpoint", dtype: "F32", options: { baseDtype: "f32" }, prequantized: { quantType: "fp4", doubleQuant: false } },
  { label: "8-bit at load", dtype: "F32", options: { baseDtype: "f32", quantize: { kind: "8bit" } } },
];

for (const c of CASES) {
  for (const world of [2, 3]) {
    void test(`ZeRO-3 load, ${world} ranks, ${c.label}: each rank holds 1/${world} and every gathered layer is the one-process load byte for byte`, async () => {
      let { dir, cfg } = await writeModel(c.dtype);
      if (c.prequantized !== undefined) ({ dir, cfg } = await writePrequantized(dir, cfg, c.prequantized.quantType, c.prequantized.doubleQuant));
      const be = createCpuBackend();
      const weights = await openWeights(dir);
      const whole = await loadCausalLmParams(be, cfg, weights, { mode: "lora", lora: makeLoraSettings({ r: 4, alpha: 8, dropout: 0, targetModules: "all-linear" }, cfg), ...c.options });
      await weights.close();
      const reference = await Promise.all(whole.layers.map((layer) => bytesOfLayer(be, layer)));

      const ranks = await loadRanks(dir, cfg, world, c.options);
      for (const r of ranks) {
        // Released layers hold one-element placeholders: a use outside acquire/release cannot compute.
        for (const t of frozenOf(r.params.layers[0]!).values()) assert.equal(t.size, 1);
        assert.ok(r.sharded.bytesHeld <= r.sharded.bytesWhole / world + 3 * 4096 * 7, `${r.sharded.bytesHeld} of ${r.sharded.bytesWhole}`);
      }
      const wholeBytes = reference.reduce((sum, m) => sum + [...m.values()].reduce((a, b) => a + b.length, 0), 0);
      assert.equal(ranks[0]!.sharded.bytesWhole, wholeBytes);

      // Forward order with prefetch, then backward order, then a layer other than the one prefetched.
      const order: [number, number | undefined][] = [[0, 1], [1, 2], [2, 2], [2, 1], [1, 0], [0, undefined], [1, 0], [2, undefined]];
      for (const [l, next] of order) {
        await Promise.all(ranks.map((r) => r.sharded.acquire(l, next)));
        for (const r of ranks) {
          const got = await bytesOfLayer(r.be, r.params.layers[l]!);
          assert.deepEqual([...got.keys()].sort(), [...reference[l]!.keys()].sort());
          for (const [name, bytes] of reference[l]!) assert.deepEqual(got.get(name), bytes, `layer ${l} ${name} on rank of ${world}`);
        }
        for (const r of ranks) r.sharded.release(l);
        for (const t of frozenOf(ranks[0]!.params.layers[l]!).values()) assert.equal(t.size, 1);
      }
    });
  }
}

void test("ZeRO-3 residency: acquiring a second layer before releasing the first, or releasing another, is an internal error", async () => {
  const { dir, cfg } = await writeModel("F32");
  const [r] = await loadRanks(dir, cfg, 1, { baseDtype: "f32" });
  await r!.sharded.acquire(0);
  await assert.rejects(r!.sharded.acquire(1), /layer 1 acquired while layer 0 still is/);
  assert.throws(() => {
    r!.sharded.release(2);
  }, /layer 2 released but layer 0/);
});
