// Which tokenizer class transformers 5 builds for a folder, and what that class puts in front of the BPE.
// transformers 5 no longer reads every part of tokenizer.json: classes with their own __init__ (LlamaTokenizer,
// GemmaTokenizer, Qwen2Tokenizer, ...) rebuild normalizer, pre-tokenizer and decoder from code and keep only the
// vocabulary and merges, while TokenizersBackend (PreTrainedTokenizerFast) reads the file as written. Which one
// a folder gets depends on tokenizer_config.json's tokenizer_class AND on config.json's model_type
// (AutoTokenizer.from_pretrained in models/auto/tokenization_auto.py, transformers 5.17). Checked against
// transformers itself: test/golden/hf-text (tools/golden/make_hf_text_golden.py).
import type { JsonObject } from "./config.ts";

/** The classes of transformers 5.17's TOKENIZER_MAPPING_NAMES for the model types tuna trains and their kin. */
const REGISTERED_CLASS: Readonly<Record<string, string>> = {
  mistral: "TokenizersBackend",
  mixtral: "TokenizersBackend",
  ministral: "TokenizersBackend",
  mistral3: "TokenizersBackend",
  phi3: "TokenizersBackend",
  qwen2: "Qwen2Tokenizer",
  qwen2_moe: "Qwen2Tokenizer",
  qwen3: "Qwen2Tokenizer",
  qwen3_moe: "Qwen2Tokenizer",
  gemma: "GemmaTokenizer",
  gemma2: "GemmaTokenizer",
  gemma3: "GemmaTokenizer",
  gemma3_text: "GemmaTokenizer",
  phi: "GPT2Tokenizer",
};

/** transformers 5.17's MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS, restricted to the model types above. */
const HUB_CLASS_OVERRIDDEN = new Set(["phi3", "qwen2"]);

const AS_WRITTEN = new Set(["TokenizersBackend", "PreTrainedTokenizer", "PythonBackend"]);

/**
 * The class transformers 5 builds ("Fast" removed; "PreTrainedTokenizer" for TokenizersBackend and its alias
 * PreTrainedTokenizerFast), from tokenizer_config.json's `tokenizerClass` and config.json's `modelType` when the
 * folder has one. A hub class that differs from the model type's registered class gives way to it when that is
 * TokenizersBackend (Mistral, Phi-3 folders declaring LlamaTokenizer read tokenizer.json as written) or when
 * transformers lists the model type's hub classes as wrong.
 */
export function effectiveTokenizerClass(tokenizerClass: string | undefined, modelType: string | undefined): string | undefined {
  const named = (c: string | undefined): string | undefined => {
    const bare = c?.replace(/Fast$/, "");
    return bare === undefined ? undefined : AS_WRITTEN.has(bare) ? "PreTrainedTokenizer" : bare;
  };
  const hub = named(tokenizerClass);
  const registered = named(modelType === undefined ? undefined : REGISTERED_CLASS[modelType]);
  if (hub === undefined || registered === undefined || hub === registered) return hub ?? registered;
  if (registered === "PreTrainedTokenizer") return registered;
  return HUB_CLASS_OVERRIDDEN.has(modelType!) ? registered : hub;
}

/**
 * What transformers 5 puts in front of the BPE instead of tokenizer.json's parts, for the classes whose own
 * pipeline differs from the files they are given. LlamaTokenizer uses no normalizer and a Metaspace
 * pre-tokenizer ("▁" prepended unless the text already starts with a space — "always" with legacy, only at the
 * text's start without) and its own decoder (models/llama/tokenization_llama.py). Empty — tokenizer.json as
 * written — for every other class, and for byte-level vocabularies declared as LlamaTokenizer (DeepSeek's
 * R1-distilled Llamas): transformers 5 would rebuild a SentencePiece pipeline around them that no model was
 * trained with (it special-cases those checkpoints by hub id to TokenizersBackend; a local copy loses that).
 * GemmaTokenizer's and Qwen2Tokenizer's pipelines equal their real tokenizer.json files (checked in the golden).
 */
export function classPipeline(json: JsonObject, config: JsonObject, modelType: string | undefined): JsonObject {
  const model = json.model as JsonObject;
  const cls = effectiveTokenizerClass(typeof config.tokenizer_class === "string" ? config.tokenizer_class : undefined, modelType);
  if (cls !== "LlamaTokenizer" || model.type !== "BPE" || model.byte_fallback !== true) return {};
  const addPrefixSpace = config.add_prefix_space !== false;
  const scheme = !addPrefixSpace ? "never" : config.legacy === true ? "always" : "first";
  return {
    normalizer: null,
    pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: scheme, split: false },
    decoder: {
      type: "Sequence",
      decoders: [{ type: "Replace", pattern: { String: "▁" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }, ...(addPrefixSpace ? [{ type: "Strip", content: " ", start: 1, stop: 0 }] : [])],
    },
  };
}
