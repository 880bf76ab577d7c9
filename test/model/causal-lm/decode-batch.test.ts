// decodeBatch: one step for many sequences — different lengths, different adapters over one base, none — gives
// each row the logits decodeForward gives that sequence alone, across families (sliding windows, q/k norms,
// Gemma's soft-caps and sandwich norms, Phi-3's fused modules) and a 4-bit base.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createCpuBackend } from "../../../src/backend/cpu/index.ts";
import type { HfConfigJson } from "../../../src/hf/presets.ts";
import { openWeights } from "../../../src/io/safetensors/checkpoint.ts";
import { makeLoraSettings } from "../../../src/lora/settings.ts";
import { createDecoder, decodeForward, freeDecoder, type Decoder } from "../../../src/model/causal-lm/decode.ts";
import { batchable, decodeBatch } from "../../../src/model/causal-lm/decode-batch.ts";
import { loadCausalLmParams } from "../../../src/model/causal-lm/load.ts";
import { withAdapter } from "../../../src/model/causal-lm/lora-views.ts";
import { createCausalLm, type CausalLm } from "../../../src/model/causal-lm/model.ts";
import type { CausalLmParams } from "../../../src/model/causal-lm/params.ts";
import { createRng } from "../../../src/util/random.ts";
import { TINY, writeTiny } from "./tiny-model.ts";

const be = createCpuBackend();

function randomize(params: CausalLmParams, seed: number, magnitudes = false): void {
  const rng = createRng(seed);
  const values = new Float32Array(params.trainable.total);
  for (let i = 0; i < values.length; i++) values[i] = 0.3 * rng.normal();
  if (magnitudes) for (const e of params.trainable.entries) if (e.name.endsWith("magnitude_vector")) values.fill(1, e.offset, e.offset + e.size);
  be.upload(params.trainable.params, values);
}

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / den;
}

async function setup(config: HfConfigJson, quantize = false): Promise<{ base: CausalLm; adapters: CausalLm[]; V: number }> {
  const { dir, cfg } = await writeTiny(config, 4);
  const weights = await openWeights(dir);
  const baseParams = await loadCausalLmParams(be, cfg, weights, { mode: "lora", baseDtype: "f32", quantize: quantize ? { kind: "4bit", quantType: "nf4", doubleQuant: true } : null });
  await weights.close();
  const model = (p: CausalLmParams): CausalLm => createCausalLm(be, p, { checkpointing: false, seed: 0 });
  const one = withAdapter(be, baseParams, makeLoraSettings({ r: 3, alpha: 6, targetModules: "all-linear" }, cfg), "f32");
  randomize(one, 1);
  const some = cfg.fusedProjections ? ["qkv_proj", "down_proj"] : ["q_proj", "v_proj", "down_proj"];
  const two = withAdapter(be, baseParams, makeLoraSettings({ r: 5, alpha: 4, targetModules: some, useRslora: true }, cfg), "f32");
  randomize(two, 2);
  return { base: model(baseParams), adapters: [model(one), model(two)], V: cfg.vocabSize };
}

const FAMILIES: [string, HfConfigJson][] = [
  ["llama", TINY],
  ["mistral with a window of 3", { ...TINY, model_type: "mistral", sliding_window: 3, tie_word_embeddings: false }],
  ["qwen3 (q/k norms)", { ...TINY, model_type: "qwen3", head_dim: 8 }],
  ["gemma2 (soft-caps, sandwich norms, alternating windows)", { ...TINY, model_type: "gemma2", head_dim: 8, query_pre_attn_scalar: 8, sliding_window: 2, attn_logit_softcapping: 5, final_logit_softcapping: 3 }],
  ["phi3 (fused modules)", { ...TINY, model_type: "phi3", tie_word_embeddings: false }],
];

for (const [what, config] of FAMILIES) {
  void test(`decodeBatch gives every row what decodeForward gives its sequence alone: ${what}`, async () => {
    const { base, adapters, V } = await setup(config);
    // Five sequences: base, adapter 1 twice (adjacent rows share one adapter GEMM), adapter 2, base again.
    const owners = [base, adapters[0]!, adapters[0]!, adapters[1]!, base];
    const prompts = [[1, 5, 9], [2, 7, 7, 3, 11, 4], [3], [4, 8, 15, 16], [9, 9, 2, 6, 1]].map((p) => p.map((t) => t % V));
    const batched = owners.map((m) => createDecoder(m, 4));
    const alone = owners.map((m) => createDecoder(m, 4));
    for (const [i, p] of prompts.entries()) {
      await decodeForward(batched[i]!, p);
      await decodeForward(alone[i]!, p);
    }
    const rng = createRng(7);
    for (let step = 0; step < 4; step++) {
      const tokens = owners.map(() => Math.floor(rng.uniform() * V));
      const rows = await decodeBatch(base, tokens.map((token, i) => ({ decoder: batched[i]!, token })));
      for (const [i, token] of tokens.entries()) {
        const expected = await decodeForward(alone[i]!, [token]);
        const diff = maxRelDiff(rows[i]!, expected);
        assert.ok(diff < 1e-5, `step ${step}, sequence ${i}: relative difference ${diff}`);
      }
    }
    assert.deepEqual(batched.map((d) => d.tokens), alone.map((d) => d.tokens));
    for (const d of [...batched, ...alone]) freeDecoder(d);
  });
}

void test("decodeBatch over an NF4 base with two adapters equals decoding each alone", async () => {
  const { base, adapters, V } = await setup(TINY, true);
  const owners = [adapters[1]!, base, adapters[0]!];
  const decoders = owners.map((m) => createDecoder(m));
  const alone = owners.map((m) => createDecoder(m));
  for (const [i, d] of decoders.entries()) {
    await decodeForward(d, [1 + i, 2, 3 % V]);
    await decodeForward(alone[i]!, [1 + i, 2, 3 % V]);
  }
  const rows = await decodeBatch(base, decoders.map((decoder, i) => ({ decoder, token: 5 + i })));
  for (const [i, d] of alone.entries()) assert.ok(maxRelDiff(rows[i]!, await decodeForward(d, [5 + i])) < 1e-5);
});

void test("batchable: DoRA adapters and models over other weights decode on their own; decodeBatch refuses them", async () => {
  const { base } = await setup(TINY);
  const cfg = base.params.cfg;
  const dora = withAdapter(be, base.params, makeLoraSettings({ r: 2, alpha: 4, targetModules: ["q_proj"], useDora: true }, cfg), "f32");
  randomize(dora, 3, true);
  const doraModel = createCausalLm(be, dora, { checkpointing: false, seed: 0 });
  const other = await setup(TINY);
  const decoders: Decoder[] = [createDecoder(doraModel), createDecoder(other.base)];
  assert.equal(batchable(decoders[0]!, base), false);
  assert.equal(batchable(decoders[1]!, base), false);
  assert.equal(batchable(createDecoder(base), base), true);
  await decodeForward(decoders[0]!, [1]);
  await assert.rejects(decodeBatch(base, [{ decoder: decoders[0]!, token: 2 }]), /cannot join the batch/);
});
