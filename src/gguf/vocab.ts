// The tokenizer as GGUF stores it (tokenizer.ggml.*), from a Hugging Face tokenizer.json:
// - byte-level BPE (Llama 3, Qwen2/3, GPT-2): model "gpt2", the vocabulary and merges as written, and the
//   pre-tokenizer named as llama.cpp knows it (tokenizer.ggml.pre), found from the Split regex;
// - SentencePiece-style BPE with byte fallback (Llama 2, Mistral, Gemma): model "llama" with per-token
//   scores. tokenizer.json has merges, not scores; llama.cpp's SentencePiece tokenizer merges the pair with the
//   highest score, so a token's score is minus the rank of the first merge that makes it, which orders the
//   merges as the BPE does (llama.cpp's own converter writes -1000 for every token of such a file);
// - a character-level BPE without merges or normalizer (tuna's demo tokenizer): written as byte-level BPE.
// Token types as llama.cpp's converter sets them. Anything else is refused, saying what it is.
import { TunaError } from "../util/errors.ts";
import { gguf, type GgufValue } from "../io/gguf/format.ts";
import type { LoadedTokenizer } from "../tokenizer/load.ts";
import { PRE_TOKENIZERS, TOKEN_TYPE } from "../tokenizer/gguf-tokenizer.ts";


type Json = Record<string, unknown>;


function obj(v: unknown): Json | null {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Json) : null;
}

/** The components of a normalizer / pre-tokenizer / decoder, flattening Sequence. */
function parts(v: unknown): Json[] {
  const o = obj(v);
  if (o === null) return [];
  const inner = o["normalizers"] ?? o["pretokenizers"] ?? o["decoders"];
  return o["type"] === "Sequence" && Array.isArray(inner) ? inner.flatMap(parts) : [o];
}

/** GPT-2's byte-to-unicode table: every byte as a printable character (what byte-level vocabularies store). */
function byteToUnicode(): string[] {
  const printable = new Set<number>();
  for (let b = 33; b <= 126; b++) printable.add(b);
  for (let b = 161; b <= 172; b++) printable.add(b);
  for (let b = 174; b <= 255; b++) printable.add(b);
  const table: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) table.push(String.fromCodePoint(printable.has(b) ? b : 256 + extra++));
  return table;
}

export interface GgufVocab {
  metadata: [string, GgufValue][];
  /** "gpt2" or "llama" (SentencePiece), as llama.cpp names the tokenizer models. */
  model: "gpt2" | "llama";
  /** Entries of the token list padded with [PADn] up to the model's vocabulary. */
  padded: number;
}

/** Merges as "a b" strings; the list form of transformers >= 4.45 with spaces encoded as U+0120 + 256 as llama.cpp does. */
function mergeStrings(merges: unknown[], where: string): string[] {
  return merges.map((m, i) => {
    if (typeof m === "string") return m;
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === "string" && typeof m[1] === "string") {
      return m.map((s: string) => s.replaceAll(" ", String.fromCodePoint(" ".codePointAt(0)! + 256))).join(" ");
    }
    throw new TunaError("FILE_FORMAT", `${where}: merges[${i}] is neither "a b" nor ["a", "b"].`);
  });
}

/**
 * tokenizer.ggml.* metadata for a model of `vocabSize` rows, from tokenizer.json (`json`, read from `where`)
 * and the tokenizer tuna loaded from the same folder (special tokens, add_bos/add_eos, chat template).
 */
export function ggufVocab(json: Json, tokenizer: LoadedTokenizer, vocabSize: number, where: string): GgufVocab {
  const model = obj(json["model"]);
  if (model === null || model["type"] !== "BPE") {
    throw new TunaError(
      "UNSUPPORTED",
      `${where}: a ${typeof model?.["type"] === "string" ? model["type"] : "unknown"} tokenizer cannot be exported to GGUF by tuna yet (BPE tokenizers can: byte-level like Llama 3 / Qwen, or SentencePiece-style like Llama 2 / Mistral).`,
    );
  }
  const vocab = obj(model["vocab"]) ?? {};
  const merges = mergeStrings(Array.isArray(model["merges"]) ? model["merges"] : [], where);
  const tokens: (string | undefined)[] = new Array<string | undefined>(vocabSize).fill(undefined);
  const types = new Array<number>(vocabSize).fill(TOKEN_TYPE.unused);
  for (const [text, id] of Object.entries(vocab)) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0) throw new TunaError("FILE_FORMAT", `${where}: vocabulary entry ${JSON.stringify(text)} has id ${String(id)}.`);
    if (id >= vocabSize) throw new TunaError("MODEL_INVALID", `${where}: token ${JSON.stringify(text)} has id ${id}, beyond the model's ${vocabSize} embedding rows.`);
    tokens[id] = text;
    types[id] = TOKEN_TYPE.normal;
  }
  const pre = parts(json["pre_tokenizer"]);
  const norm = parts(json["normalizer"]);
  const decoders = parts(json["decoder"]);
  const byteLevel = [...pre, ...decoders].some((p) => p["type"] === "ByteLevel");
  const spmStyle = model["byte_fallback"] === true || norm.some((n) => n["type"] === "Prepend" || (n["type"] === "Replace" && n["content"] === "▁")) || pre.some((p) => p["type"] === "Metaspace");
  const plainChars = !byteLevel && !spmStyle && pre.length === 0 && norm.length === 0 && merges.length === 0;

  let kind: "gpt2" | "llama";
  const metadata: [string, GgufValue][] = [];
  if (byteLevel) {
    kind = "gpt2";
    const split = pre.find((p) => p["type"] === "Split");
    const pattern = obj(split?.["pattern"])?.["Regex"];
    const usesRegex = pre.some((p) => p["type"] === "ByteLevel" && p["use_regex"] !== false);
    const named = split === undefined ? (usesRegex ? { name: "gpt-2" } : undefined) : PRE_TOKENIZERS.find((p) => p.pattern === pattern);
    if (named === undefined || norm.some((n) => n["type"] !== "NFC")) {
      throw new TunaError(
        "UNSUPPORTED",
        `${where}: its pre-tokenizer ${typeof pattern === "string" ? `regex ${JSON.stringify(pattern)}` : JSON.stringify(json["pre_tokenizer"])} is not one tuna can name for llama.cpp ` +
          `(known: Llama 3's "llama-bpe", Qwen2/3's "qwen2", GPT-2's); llama.cpp would split text differently, so the export stops here.`,
      );
    }
    metadata.push(["tokenizer.ggml.model", gguf.str("gpt2")], ["tokenizer.ggml.pre", gguf.str(named.name)]);
  } else if (spmStyle) {
    kind = "llama";
    metadata.push(["tokenizer.ggml.model", gguf.str("llama")], ["tokenizer.ggml.pre", gguf.str("default")]);
  } else if (plainChars) {
    // Byte-level BPE without merges tokenizes byte by byte, as this vocabulary does character by character,
    // when every character is one ASCII byte.
    const wide = Object.keys(vocab).find((t) => !/^[\x00-\x7f]$/.test(t) && !tokenizer.addedTokens.some((a) => a.content === t));
    if (wide !== undefined) {
      throw new TunaError("UNSUPPORTED", `${where}: a character-level tokenizer with the non-ASCII token ${JSON.stringify(wide)} has no GGUF equivalent tuna can write.`);
    }
    kind = "gpt2";
    const table = byteToUnicode();
    for (const [id, t] of tokens.entries()) if (t !== undefined && types[id] === TOKEN_TYPE.normal) tokens[id] = table[t.charCodeAt(0)]!;
    metadata.push(["tokenizer.ggml.model", gguf.str("gpt2")], ["tokenizer.ggml.pre", gguf.str("default")]);
  } else {
    throw new TunaError("UNSUPPORTED", `${where}: a BPE tokenizer that is neither byte-level nor SentencePiece-style (normalizer ${JSON.stringify(json["normalizer"])}) has no GGUF form tuna can write.`);
  }

  for (const t of tokenizer.addedTokens) {
    if (t.id >= vocabSize) throw new TunaError("MODEL_INVALID", `${where}: added token ${JSON.stringify(t.content)} has id ${t.id}, beyond the model's ${vocabSize} embedding rows.`);
    tokens[t.id] = t.content;
    const looksSpecial = /^<\|.*\|>$/.test(t.content) || t.content === "<pad>" || t.content === "<mask>";
    types[t.id] = t.special || looksSpecial ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined;
  }
  const unkId = tokenizer.unkToken === undefined ? undefined : tokenizer.tokenToId(tokenizer.unkToken);
  if (kind === "llama") {
    for (const [id, t] of tokens.entries()) {
      if (t !== undefined && types[id] === TOKEN_TYPE.normal && /^<0x[0-9A-F]{2}>$/.test(t)) types[id] = TOKEN_TYPE.byte;
    }
    if (unkId !== undefined) types[unkId] = TOKEN_TYPE.unknown;
  }
  let padded = 0;
  const list = tokens.map((t, i) => {
    if (t !== undefined) return t;
    padded++;
    return `[PAD${i}]`;
  });
  metadata.push(["tokenizer.ggml.tokens", gguf.strings(list)]);
  if (kind === "llama") {
    const scores = new Array<number>(vocabSize).fill(0);
    const ids = new Map(list.map((t, i) => [t, i]));
    const scored = new Set<number>();
    merges.forEach((m, rank) => {
      const id = ids.get(m.replace(" ", ""));
      if (id !== undefined && !scored.has(id)) {
        scored.add(id);
        scores[id] = -rank;
      }
    });
    for (const [id, type] of types.entries()) if (type === TOKEN_TYPE.control || type === TOKEN_TYPE.userDefined || type === TOKEN_TYPE.unused) scores[id] = -1000;
    metadata.push(["tokenizer.ggml.scores", gguf.f32s(scores)]);
  }
  metadata.push(["tokenizer.ggml.token_type", gguf.i32s(types)]);
  if (kind === "gpt2") metadata.push(["tokenizer.ggml.merges", gguf.strings(merges)]); // llama.cpp requires the key, even empty
  const special: [string, number | undefined][] = [
    ["bos", tokenizer.bosTokenId],
    ["eos", tokenizer.eosTokenId],
    ["unknown", unkId],
    ["padding", tokenizer.padTokenId],
  ];
  for (const [name, id] of special) if (id !== undefined && id < vocabSize) metadata.push([`tokenizer.ggml.${name}_token_id`, gguf.u32(id)]);
  metadata.push(["tokenizer.ggml.add_bos_token", gguf.bool(tokenizer.addBosToken)], ["tokenizer.ggml.add_eos_token", gguf.bool(tokenizer.addEosToken)]);
  if (kind === "llama") {
    const prepends = norm.some((n) => n["type"] === "Prepend") || pre.some((p) => p["type"] === "Metaspace" && p["prepend_scheme"] !== "never" && p["add_prefix_space"] !== false);
    metadata.push(["tokenizer.ggml.add_space_prefix", gguf.bool(prepends)]);
  }
  if (tokenizer.chatTemplate !== undefined) metadata.push(["tokenizer.chat_template", gguf.str(tokenizer.chatTemplate)]);
  return { metadata, model: kind, padded };
}
