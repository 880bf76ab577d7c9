// The KV-cache forward against the training forward on tiny random models with random LoRA: prefill logits
// equal the forward's at the same position, and token-by-token or chunked decoding equals the full sequence.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { rm } from "node:fs/promises";
import { dirname } from "node:path";
import { createCpuBackend } from "../../../src/backend/cpu/index.ts";
import { openWeights } from "../../../src/io/safetensors/checkpoint.ts";
import type { ModelConfig } from "../../../src/hf/config.ts";
import type { HfConfigJson } from "../../../src/hf/presets.ts";
import { batchFromDocuments } from "../../../src/data/batch.ts";
import { PREFILL_CHUNK, createDecoder, decodeForward, freeDecoder, truncateCache, type Decoder } from "../../../src/model/causal-lm/decode.ts";
import { loadCausalLmParams, type LoadOptions } from "../../../src/model/causal-lm/load.ts";
import { createCausalLm, forward, freeBatch, lastLogits, uploadBatch, type CausalLm } from "../../../src/model/causal-lm/model.ts";
import { makeLoraSettings, type LoraOptions } from "../../../src/lora/settings.ts";
import { createRng } from "../../../src/util/random.ts";
import { TINY, writeTiny } from "./tiny-model.ts";

const folders: string[] = [];
after(async () => {
  for (const dir of folders) await rm(dirname(dir), { recursive: true, force: true });
});

const QWEN2: HfConfigJson = { ...TINY, model_type: "qwen2", num_key_value_heads: 1, tie_word_embeddings: false };
const LLAMA_BIASES_LLAMA3_ROPE: HfConfigJson = {
  ...TINY,
  num_key_value_heads: 4,
  attention_bias: true,
  mlp_bias: true,
  tie_word_embeddings: false,
  rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8 },
};

interface Setup {
  lora?: Partial<LoraOptions>;
  quantize?: LoadOptions["quantize"];
}

/** The tiny model with a random adapter (B nonzero), loaded like tiny-model.ts but with the load options under test. */
async function loadModel(config: HfConfigJson, setup: Setup = {}, seed = 5): Promise<{ model: CausalLm; cfg: ModelConfig }> {
  const { dir, cfg } = await writeTiny(config);
  folders.push(dir);
  const backend = createCpuBackend({ threads: 1 });
  const weights = await openWeights(dir);
  const lora = makeLoraSettings({ r: 4, alpha: 8, dropout: 0, targetModules: "all-linear", ...setup.lora }, cfg);
  const params = await loadCausalLmParams(backend, cfg, weights, { mode: "lora", baseDtype: "f32", lora, quantize: setup.quantize ?? null });
  await weights.close();
  const rng = createRng(seed);
  const values = Float32Array.from({ length: params.trainable.total }, () => 0.2 * rng.normal());
  backend.upload(params.trainable.params, values);
  return { model: createCausalLm(backend, params, { checkpointing: false, seed: 11 }), cfg };
}

/** The training forward over one document: logits (T, V) as rows. */
async function fullLogits(model: CausalLm, ids: number[]): Promise<Float32Array[]> {
  const batch = uploadBatch(model, batchFromDocuments([{ inputIds: ids }]));
  await forward(model, batch);
  const all = await lastLogits(model);
  freeBatch(model, batch);
  const V = model.params.cfg.vocabSize;
  return ids.map((_, t) => all.slice(t * V, (t + 1) * V));
}

function randomIds(V: number, n: number, seed: number): number[] {
  const rng = createRng(seed);
  return Array.from({ length: n }, () => Math.floor(rng.uniform() * V));
}

/** ||a - b|| / ||b||: every logit of a row, in float64. */
function relErr(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

/** The rows agree to float32 accuracy (both sides accumulate in float64; GEMM shapes differ). */
function assertLogits(actual: Float32Array, expected: Float32Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: vocabulary size`);
  const err = relErr(actual, expected);
  assert.ok(err < 1e-6, `${what}: relative error ${err.toExponential(2)}`);
}

/** Feeds `ids` in chunks; checks each chunk's returned logits against the forward's row of its last token. */
async function checkChunks(decoder: Decoder, ids: number[], expected: Float32Array[], chunks: number[], what: string): Promise<void> {
  let at = decoder.cache.length;
  for (const n of chunks) {
    const logits = await decodeForward(decoder, ids.slice(at, at + n));
    at += n;
    assertLogits(logits, expected[at - 1]!, `${what}, chunk ending at position ${at - 1}`);
    assert.equal(decoder.cache.length, at);
  }
  assert.deepEqual(decoder.tokens, ids.slice(0, at));
}

const models: [string, HfConfigJson, Setup][] = [
  ["llama GQA 4/2, tied embeddings", TINY, {}],
  ["qwen2 (q/k/v biases), MQA 4/1, untied", QWEN2, {}],
  ["llama attention_bias + mlp_bias, llama3 RoPE scaling, MHA", LLAMA_BIASES_LLAMA3_ROPE, {}],
  ["llama with trained token rows (tied)", TINY, { lora: { trainableTokenIndices: [5, 17, 40] } }],
  ["qwen2 with trained token rows of an untied lm_head", QWEN2, { lora: { trainableTokenIndices: { embed_tokens: [5, 17], lm_head: [40, 17] } } }],
  ["llama NF4 base (dequantized per GEMM)", TINY, { quantize: { kind: "4bit", quantType: "nf4", doubleQuant: true, blocksize: 64 } }],
  ["qwen2 with DoRA (q/k/v biases, norms reused after the first call)", QWEN2, { lora: { useDora: true } }],
  ["qwen3 (q/k norms, head_dim 12), untied", { ...TINY, model_type: "qwen3", head_dim: 12, tie_word_embeddings: false }, {}],
  [
    "gemma2 (soft-caps, sandwich norms, GeGLU, alternating window 3)",
    { ...TINY, model_type: "gemma2", head_dim: 8, query_pre_attn_scalar: 6, sliding_window: 3, attn_logit_softcapping: 2, final_logit_softcapping: 3 },
    {},
  ],
  ["phi3 (fused qkv_proj / gate_up_proj), NF4 base, DoRA", { ...TINY, model_type: "phi3", tie_word_embeddings: false }, { lora: { useDora: true }, quantize: { kind: "4bit", quantType: "nf4", doubleQuant: true, blocksize: 64 } }],
  ["gemma3 text (q/k norms, local RoPE base), NF4 base", { ...TINY, model_type: "gemma3_text", head_dim: 8, sliding_window: 3, sliding_window_pattern: 2, rope_local_base_freq: 100 }, { quantize: { kind: "4bit", quantType: "nf4", doubleQuant: true, blocksize: 64 } }],
  ["llama NF4 base with DoRA", TINY, { lora: { useDora: true }, quantize: { kind: "4bit", quantType: "nf4", doubleQuant: true, blocksize: 64 } }],
];

for (const [name, config, setup] of models) {
  void test(`decode parity: ${name}`, async () => {
    const { model, cfg } = await loadModel(config, setup);
    const ids = randomIds(cfg.vocabSize, 13, 9);
    // Make sure the trained rows are really used by the sequence.
    ids[2] = 17;
    ids[6] = 5;
    const expected = await fullLogits(model, ids);

    // Prefill of the whole prompt: the last row of the full forward.
    const whole = createDecoder(model, 4);
    assertLogits(await decodeForward(whole, ids), expected[ids.length - 1]!, "prefill of 13 tokens");
    freeDecoder(whole);

    // A 5-token prefill, then one token at a time (the cache grows from its initial 2 rows).
    const stepwise = createDecoder(model, 2);
    await checkChunks(stepwise, ids, expected, [5, 1, 1, 1, 1, 1, 1, 1, 1], "prefill 5 then token by token");

    // Dropping cached tokens and feeding different chunk sizes gives the same rows again.
    truncateCache(stepwise, 3);
    await checkChunks(stepwise, ids, expected, [1, 4, 2, 3], "after truncating to 3, chunks 1/4/2/3");
    freeDecoder(stepwise);

    // Pure token-by-token from the first token.
    const single = createDecoder(model);
    await checkChunks(single, ids, expected, ids.map(() => 1), "token by token from position 0");
    freeDecoder(single);
  });
}

void test("a prompt longer than PREFILL_CHUNK is prefilled in pieces with the same logits", async () => {
  const { model, cfg } = await loadModel(TINY);
  const ids = randomIds(cfg.vocabSize, 2 * PREFILL_CHUNK + 77, 12);
  const expected = await fullLogits(model, ids);
  const decoder = createDecoder(model);
  assertLogits(await decodeForward(decoder, ids), expected[ids.length - 1]!, `prefill of ${ids.length} tokens`);
  assert.equal(decoder.cache.length, ids.length);
  assert.ok(decoder.buffers !== null && decoder.buffers.rows <= PREFILL_CHUNK, "activations sized for one piece");
  assertLogits(await decodeForward(decoder, [7]), (await fullLogits(model, [...ids, 7]))[ids.length]!, "the step after it");
});

void test("decoding ignores LoRA dropout: an adapter trained with dropout 0.3 decodes as with dropout 0", async () => {
  const plain = await loadModel(TINY, {}, 5);
  const dropped = await loadModel(TINY, { lora: { dropout: 0.3 } }, 5);
  const ids = randomIds(TINY.vocab_size as number, 6, 4);
  const a = createDecoder(plain.model);
  const b = createDecoder(dropped.model);
  for (const id of ids) assert.deepEqual(await decodeForward(b, [id]), await decodeForward(a, [id]));
});

void test("decodeForward rejects ids outside the vocabulary and an empty step, caching nothing", async () => {
  const { model } = await loadModel(TINY);
  const decoder = createDecoder(model);
  await assert.rejects(decodeForward(decoder, [3, 96]), (e: unknown) => e instanceof Error && /token id 96 at position 1 is outside the model's vocabulary \(96\)/.test(e.message));
  await assert.rejects(decodeForward(decoder, []), /at least one new token/);
  assert.equal(decoder.cache.length, 0);
  assert.deepEqual(decoder.tokens, []);
});

void test("sliding windows: decode parity beyond the window, and a token outside every window changes nothing", async () => {
  // Mistral windows every layer; this Qwen2 alternates sliding and full layers through layer_types.
  for (const config of [
    { ...TINY, model_type: "mistral", sliding_window: 4 },
    { ...QWEN2, use_sliding_window: true, sliding_window: 3, layer_types: ["sliding_attention", "full_attention"] },
  ]) {
    const { model, cfg } = await loadModel(config);
    const ids = randomIds(cfg.vocabSize, 13, 21);
    const expected = await fullLogits(model, ids);
    const decoder = createDecoder(model, 2);
    await checkChunks(decoder, ids, expected, [5, 1, 1, 3, 1, 2], `${String((config as HfConfigJson)["model_type"])} window`);
    freeDecoder(decoder);
  }
  // One Mistral layer with window 4: position 12 sees positions 9..12 only, so token 8 cannot matter, token 9 must.
  const { model, cfg } = await loadModel({ ...TINY, model_type: "mistral", sliding_window: 4, num_hidden_layers: 1 });
  const ids = randomIds(cfg.vocabSize, 13, 22);
  const base = (await fullLogits(model, ids))[12]!;
  const changed = (at: number): number[] => ids.map((id, i) => (i === at ? (id + 1) % cfg.vocabSize : id));
  const logitsAt12 = async (at: number): Promise<Float32Array> => (await fullLogits(model, changed(at)))[12]!;
  assert.deepEqual(await logitsAt12(8), base);
  assert.ok(relErr(await logitsAt12(9), base) > 1e-4, "the oldest token inside the window matters");
});
