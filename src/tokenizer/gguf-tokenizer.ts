// A GGUF file's tokenizer (tokenizer.ggml.*) as the tokenizer.json and tokenizer_config.json transformers would
// load, so a .gguf model tokenizes in tuna as in llama.cpp. The inverse of vocab.ts:
// - "gpt2" (byte-level BPE): vocabulary and merges as stored, the pre-tokenizer regex of the named pre type;
// - "llama" (SentencePiece): BPE with byte fallback whose merges come from the scores as transformers'
//   SentencePieceExtractor makes them (every split of a piece into two pieces, pieces by descending score).
// Control tokens become special added tokens, user-defined ones plain added tokens.
import { TunaError } from "../util/errors.ts";
import { metadataReader, openGguf } from "../io/gguf/reader.ts";

/** tokenizer.ggml.token_type values (llama.cpp's llama_token_type). */
export const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

/** llama.cpp's pre-tokenizer names (llama-vocab.cpp) for the Split regexes of the byte-level tokenizers tuna trains. */
export const PRE_TOKENIZERS: { name: string; pattern: string }[] = [
  { name: "llama-bpe", pattern: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" },
  { name: "qwen2", pattern: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" },
];

type Json = Record<string, unknown>;

export interface GgufTokenizerFiles {
  tokenizerJson: Json;
  tokenizerConfig: Json;
}

/** transformers' SentencePieceExtractor.extract with scores: merges ordered by the merged piece's score, then by the halves' ids. */
function mergesFromScores(tokens: string[], scores: number[], normal: (id: number) => boolean): string[][] {
  const ids = new Map<string, number>();
  tokens.forEach((t, i) => {
    if (normal(i) && !ids.has(t)) ids.set(t, i);
  });
  const merges: { left: string; right: string; score: number; order: number }[] = [];
  let order = 0;
  for (const [piece, id] of ids) {
    const chars = Array.from(piece); // code points, as Python slices the piece
    const local: { left: string; right: string; l: number; r: number }[] = [];
    for (let i = 1; i < chars.length; i++) {
      const left = chars.slice(0, i).join("");
      const right = chars.slice(i).join("");
      const l = ids.get(left);
      const r = ids.get(right);
      if (l !== undefined && r !== undefined) local.push({ left, right, l, r });
    }
    local.sort((a, b) => a.l - b.l || a.r - b.r);
    for (const m of local) merges.push({ left: m.left, right: m.right, score: scores[id] ?? 0, order: order++ });
  }
  merges.sort((a, b) => b.score - a.score || a.order - b.order);
  return merges.map((m) => [m.left, m.right]);
}

export async function tokenizerFilesFromGguf(path: string): Promise<GgufTokenizerFiles> {
  const file = await openGguf(path);
  try {
    const m = metadataReader(file);
    const kind = m.optStr("tokenizer.ggml.model");
    const tokens = m.array("tokenizer.ggml.tokens");
    if (kind === undefined || tokens === undefined) {
      throw new TunaError("FILE_NOT_FOUND", `${path} carries no tokenizer (tokenizer.ggml.model / tokens); give a tokenizer folder separately.`);
    }
    if (kind !== "gpt2" && kind !== "llama") {
      throw new TunaError("UNSUPPORTED", `${path}: a "${kind}" tokenizer cannot be read by tuna (it reads GGUF "gpt2" byte-level BPE and "llama" SentencePiece tokenizers).`);
    }
    const texts = tokens.map(String);
    const types = (m.array("tokenizer.ggml.token_type") ?? []).map(Number);
    const typeOf = (id: number): number => types[id] ?? TOKEN_TYPE.normal;
    const vocab: Record<string, number> = {};
    const added: Json[] = [];
    texts.forEach((t, id) => {
      const type = typeOf(id);
      if (type === TOKEN_TYPE.unused && /^\[PAD\d+\]$/.test(t)) return;
      if (type === TOKEN_TYPE.control || type === TOKEN_TYPE.userDefined) {
        added.push({ id, content: t, single_word: false, lstrip: false, rstrip: false, normalized: type === TOKEN_TYPE.userDefined, special: type === TOKEN_TYPE.control });
        if (kind === "llama") vocab[t] ??= id; // SentencePiece vocabularies hold their control pieces too
        return;
      }
      vocab[t] ??= id;
    });
    const pre = m.optStr("tokenizer.ggml.pre") ?? "default";
    const idText = (key: string): string | null => {
      const id = m.optNum(`tokenizer.ggml.${key}_token_id`);
      return id === undefined ? null : (texts[id] ?? null);
    };
    let json: Json;
    if (kind === "gpt2") {
      const named = PRE_TOKENIZERS.find((p) => p.name === pre);
      if (named === undefined && pre !== "gpt-2" && pre !== "default") {
        throw new TunaError("UNSUPPORTED", `${path}: the pre-tokenizer "${pre}" is not one tuna can rebuild (known: ${[...PRE_TOKENIZERS.map((p) => p.name), "gpt-2", "default"].join(", ")}).`);
      }
      json = {
        version: "1.0",
        added_tokens: added,
        normalizer: pre === "qwen2" ? { type: "NFC" } : null,
        pre_tokenizer:
          named === undefined
            ? { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true }
            : {
                type: "Sequence",
                pretokenizers: [
                  { type: "Split", pattern: { Regex: named.pattern }, behavior: "Isolated", invert: false },
                  { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
                ],
              },
        post_processor: null,
        decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
        model: {
          type: "BPE",
          dropout: null,
          unk_token: null,
          continuing_subword_prefix: null,
          end_of_word_suffix: null,
          fuse_unk: false,
          byte_fallback: false,
          ignore_merges: pre === "llama-bpe",
          vocab,
          merges: (m.array("tokenizer.ggml.merges") ?? []).map(String),
        },
      };
    } else {
      const scores = (m.array("tokenizer.ggml.scores") ?? []).map(Number);
      const prefix = m.optBool("tokenizer.ggml.add_space_prefix") ?? true;
      const normal = (id: number): boolean => typeOf(id) === TOKEN_TYPE.normal;
      json = {
        version: "1.0",
        added_tokens: added,
        normalizer: { type: "Sequence", normalizers: [...(prefix ? [{ type: "Prepend", prepend: "▁" }] : []), { type: "Replace", pattern: { String: " " }, content: "▁" }] },
        pre_tokenizer: null,
        post_processor: null,
        decoder: {
          type: "Sequence",
          decoders: [{ type: "Replace", pattern: { String: "▁" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }, ...(prefix ? [{ type: "Strip", content: " ", start: 1, stop: 0 }] : [])],
        },
        model: {
          type: "BPE",
          dropout: null,
          unk_token: idText("unknown"),
          continuing_subword_prefix: null,
          end_of_word_suffix: null,
          fuse_unk: true,
          byte_fallback: true,
          ignore_merges: false,
          vocab,
          merges: mergesFromScores(texts, scores, normal),
        },
      };
    }
    const config: Json = {
      bos_token: idText("bos"),
      eos_token: idText("eos"),
      unk_token: idText("unknown"),
      pad_token: idText("padding"),
      add_bos_token: m.optBool("tokenizer.ggml.add_bos_token") ?? false,
      add_eos_token: m.optBool("tokenizer.ggml.add_eos_token") ?? false,
      clean_up_tokenization_spaces: false,
    };
    const template = m.optStr("tokenizer.chat_template");
    if (template !== undefined) config["chat_template"] = template;
    return { tokenizerJson: json, tokenizerConfig: config };
  } finally {
    await file.close();
  }
}
