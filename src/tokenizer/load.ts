// Loading a fast tokenizer (tokenizer.json + side files) through @huggingface/tokenizers, with
// transformers' rules for special tokens, add_bos_token / add_eos_token and len(tokenizer).

import { Tokenizer } from "@huggingface/tokenizers";
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { TunaError, errorMessage } from "../util/errors.ts";
import { readJsonObject, readTokenizerSettings, tokenizerSettingsOf } from "./config.ts";
import { isGgufPath } from "../io/gguf/reader.ts";
import { tokenizerFilesFromGguf } from "./gguf-tokenizer.ts";
import type { JsonObject, TokenizerSettings } from "./config.ts";
import { createWordEncoder } from "./fast-encode.ts";
import { classPipeline } from "./tokenizer-class.ts";
import type { WordEncoder } from "./fast-encode.ts";

// @huggingface/tokenizers 0.2.0 ships ESM declarations whose relative imports have no extension, which
// NodeNext resolution cannot follow, so its classes arrive untyped. This is the part of its
// types/core/Tokenizer.d.ts that tuna uses.
interface HfTokenizer {
  encode(text: string, options?: { add_special_tokens?: boolean }): { ids: number[] };
  decode(ids: number[], options?: { skip_special_tokens?: boolean }): string;
  token_to_id(token: string): number | undefined;
  id_to_token(id: number): string | undefined;
}
const HfTokenizerClass = Tokenizer as unknown as new (tokenizerJson: object, config: object) => HfTokenizer;

/** What a tokenizer folder says, as plain data. */
export interface TokenizerInfo {
  readonly vocabSize: number; // the model's vocab (tokenizer.vocab_size)
  readonly size: number; // distinct tokens including added ones (len(tokenizer))
  readonly bosToken?: string;
  readonly eosToken?: string;
  readonly padToken?: string;
  readonly unkToken?: string;
  readonly bosTokenId?: number;
  readonly eosTokenId?: number;
  readonly padTokenId?: number;
  readonly addedTokens: { id: number; content: string; special: boolean }[];
  readonly chatTemplate?: string; // the default template
  readonly chatTemplates: Readonly<Record<string, string>>; // every named template, "default" included
  readonly addBosToken: boolean;
  readonly addEosToken: boolean;
  readonly modelMaxLength?: number; // absent when the config says "no limit" (transformers writes 1e30)
  readonly kind: string; // tokenizer.json model type: BPE, Unigram, WordPiece, ...
}

export interface LoadedTokenizer extends TokenizerInfo {
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  decode(ids: number[], options?: { skipSpecialTokens?: boolean }): string;
  tokenToId(token: string): number | undefined;
  idToToken(id: number): string | undefined;
  /** Present when encoding word by word is exact for this tokenizer (fast-encode.ts); encode uses it. */
  readonly wordEncoder?: WordEncoder;
}

function missingTokenizerError(folder: string): TunaError {
  if (!existsSync(folder) || !statSync(folder).isDirectory()) {
    return new TunaError("FILE_NOT_FOUND", `tokenizer folder ${folder} does not exist.`);
  }
  const sentencepiece = existsSync(join(folder, "tokenizer.model"))
    ? ` It has only tokenizer.model (a sentencepiece model), which tuna cannot read. Convert it once in Python ` +
      `(needs sentencepiece and protobuf): from transformers import AutoTokenizer; ` +
      `AutoTokenizer.from_pretrained("${folder}").save_pretrained("${folder}")`
    : "";
  return new TunaError(
    "FILE_NOT_FOUND",
    `no tokenizer.json in ${folder}: tuna needs a fast tokenizer (tokenizer.json).${sentencepiece}`,
  );
}

// The model type as tokenizer.json states it, or as the library would infer it for old files without "type".
function modelKind(model: JsonObject): string {
  if (typeof model.type === "string") return model.type;
  if (Array.isArray(model.vocab)) return "Unigram";
  if ("merges" in model) return "BPE";
  if ("continuing_subword_prefix" in model) return "WordPiece";
  return "Legacy";
}

function modelVocabTokens(model: JsonObject): string[] {
  if (Array.isArray(model.vocab)) return model.vocab.map((entry) => String((entry as unknown[])[0]));
  return typeof model.vocab === "object" && model.vocab !== null ? Object.keys(model.vocab) : [];
}

function addedTokenList(json: JsonObject, path: string): { id: number; content: string; special: boolean }[] {
  const raw = json.added_tokens ?? [];
  if (!Array.isArray(raw)) throw new TunaError("FILE_FORMAT", `${path}: "added_tokens" must be a list.`);
  return raw.map((t: unknown, i) => {
    const entry = t as { id?: unknown; content?: unknown; special?: unknown };
    if (typeof entry.id !== "number" || typeof entry.content !== "string") {
      throw new TunaError("FILE_FORMAT", `${path}: added_tokens[${i}] needs a numeric "id" and a string "content".`);
    }
    return { id: entry.id, content: entry.content, special: entry.special === true };
  });
}

/**
 * Load the tokenizer of a model folder (or of a .gguf file, rebuilt from its metadata by gguf-tokenizer.ts);
 * FILE_NOT_FOUND without tokenizer.json, FILE_FORMAT when it is broken. `modelType` is the model's config.json
 * model_type (it decides transformers 5's tokenizer class, tokenizer-class.ts); pass it when `dir` is not the
 * model folder (an adapter's tokenizer), else the folder's config.json is read.
 */
export async function loadTokenizer(dir: string, modelType?: string): Promise<LoadedTokenizer> {
  const folder = resolve(dir);
  if (isGgufPath(folder) && existsSync(folder) && statSync(folder).isFile()) {
    const { tokenizerJson, tokenizerConfig } = await tokenizerFilesFromGguf(folder);
    const templates: Record<string, string> = typeof tokenizerConfig.chat_template === "string" ? { default: tokenizerConfig.chat_template } : {};
    return tokenizerFromJson(tokenizerJson, tokenizerSettingsOf(tokenizerConfig, {}, templates), folder, modelType);
  }
  const jsonPath = join(folder, "tokenizer.json");
  if (!existsSync(jsonPath)) throw missingTokenizerError(folder);
  const json = (await readJsonObject(jsonPath, "tokenizer"))!;
  return tokenizerFromJson(json, await readTokenizerSettings(folder), jsonPath, modelType ?? (await folderModelType(folder)));
}

/** config.json's model_type when the tokenizer folder is a model folder (it decides transformers 5's tokenizer class). */
async function folderModelType(folder: string): Promise<string | undefined> {
  const config = await readJsonObject(join(folder, "config.json"), "model config");
  return typeof config?.model_type === "string" ? config.model_type : undefined;
}

/**
 * Bumped whenever tuna tokenizes the same tokenizer files differently, so caches keyed by those files (prepared
 * datasets) are not reused across the change. 2: transformers 5's Llama class pipeline (classPipeline). 3: that
 * pipeline only where transformers 5 really builds LlamaTokenizer (not for Mistral or Phi-3 model folders). 4: a
 * template's {% generation %} blocks mark the assistant spans.
 */
export const TOKENIZATION_REVISION = 4;

/** A tokenizer from the contents of tokenizer.json (`json`, read from `jsonPath`) and the folder's settings. */
function tokenizerFromJson(json: JsonObject, settings: TokenizerSettings, jsonPath: string, modelType: string | undefined): LoadedTokenizer {
  const model = json.model;
  if (typeof model !== "object" || model === null || Array.isArray(model)) {
    throw new TunaError("FILE_FORMAT", `${jsonPath} has no "model" object; it is not a tokenizers file.`);
  }
  const addedTokens = addedTokenList(json, jsonPath);

  const vocabTokens = modelVocabTokens(model as JsonObject);
  const facts = {
    kind: modelKind(model as JsonObject),
    vocabSize: vocabTokens.length,
    size: new Set([...vocabTokens, ...addedTokens.map((t) => t.content)]).size,
    addedTokens,
  };
  try {
    // The library requires these keys to be present, null meaning "none". Added tokens go in as written
    // (lstrip, rstrip, normalized matter to splitting).
    const absent = { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null };
    const pipeline = { ...absent, ...json, ...classPipeline(json, settings.config, modelType), added_tokens: json.added_tokens ?? [] };
    const tok = new HfTokenizerClass(pipeline, settings.config);
    const words = createWordEncoder(tok, pipeline);
    // Inside the guard: building probes the tokenizer, and some components only fail when first used.
    return buildTokenizer(tok, settings, facts, "encoder" in words ? words.encoder : undefined);
  } catch (e) {
    throw new TunaError("FILE_FORMAT", `@huggingface/tokenizers could not load ${jsonPath}: ${errorMessage(e)}`, {
      cause: e,
    });
  }
}

function buildTokenizer(
  tok: HfTokenizer,
  settings: TokenizerSettings,
  facts: Pick<TokenizerInfo, "kind" | "vocabSize" | "size" | "addedTokens">,
  wordEncoder: WordEncoder | undefined,
): LoadedTokenizer {
  const { special, config } = settings;
  const idOf = (token: string | undefined): number | undefined => (token === undefined ? undefined : tok.token_to_id(token));
  const bosTokenId = idOf(special.bos_token);
  const eosTokenId = idOf(special.eos_token);

  // What tokenizer.json's post-processor does on its own, found by encoding a probe both ways.
  const probe = tok.encode("a", { add_special_tokens: true }).ids;
  const plain = tok.encode("a", { add_special_tokens: false }).ids;
  const postAddsBos = bosTokenId !== undefined && probe[0] === bosTokenId && plain[0] !== bosTokenId;
  const postAddsEos = eosTokenId !== undefined && probe.at(-1) === eosTokenId && plain.at(-1) !== eosTokenId;
  // Like LlamaTokenizerFast.update_post_processor: explicit add_bos_token / add_eos_token in the config win.
  const explicit = (value: unknown, otherwise: boolean): boolean => (typeof value === "boolean" ? value : otherwise);
  const addBosToken = bosTokenId !== undefined && explicit(config.add_bos_token, postAddsBos);
  const addEosToken = eosTokenId !== undefined && explicit(config.add_eos_token, postAddsEos);

  const maxLength = config.model_max_length;
  const info: TokenizerInfo = {
    ...facts,
    chatTemplates: settings.chatTemplates,
    addBosToken,
    addEosToken,
    ...(special.bos_token === undefined ? {} : { bosToken: special.bos_token }),
    ...(special.eos_token === undefined ? {} : { eosToken: special.eos_token }),
    ...(special.pad_token === undefined ? {} : { padToken: special.pad_token }),
    ...(special.unk_token === undefined ? {} : { unkToken: special.unk_token }),
    ...(bosTokenId === undefined ? {} : { bosTokenId }),
    ...(eosTokenId === undefined ? {} : { eosTokenId }),
    ...(idOf(special.pad_token) === undefined ? {} : { padTokenId: idOf(special.pad_token)! }),
    ...(settings.chatTemplate === undefined ? {} : { chatTemplate: settings.chatTemplate }),
    ...(typeof maxLength === "number" && maxLength <= Number.MAX_SAFE_INTEGER ? { modelMaxLength: maxLength } : {}),
  };

  return {
    ...info,
    ...(wordEncoder === undefined ? {} : { wordEncoder }),
    encode(text, options = {}) {
      const addSpecialTokens = options.addSpecialTokens ?? true;
      if (!addSpecialTokens && wordEncoder !== undefined) return wordEncoder.encode(text);
      const ids = tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
      if (!addSpecialTokens) return ids;
      if (addBosToken && !postAddsBos) ids.unshift(bosTokenId);
      if (!addBosToken && postAddsBos) ids.shift();
      if (addEosToken && !postAddsEos) ids.push(eosTokenId);
      if (!addEosToken && postAddsEos) ids.pop();
      return ids;
    },
    decode(ids, options = {}) {
      // The library rejects an empty list; transformers decodes it to "".
      if (ids.length === 0) return "";
      return tok.decode(ids, { skip_special_tokens: options.skipSpecialTokens ?? false });
    },
    tokenToId: (token) => tok.token_to_id(token),
    idToToken: (id) => tok.id_to_token(id),
  };
}
