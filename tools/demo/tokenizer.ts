// The demo's character-level tokenizer as Hugging Face files: a BPE model with no merges (every character
// is its own token), a Fuse decoder (tokens joined with no spaces), ChatML special tokens, ChatML template.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CHATML_TEMPLATE } from "../../src/hf/tokenizer-fixture.ts";

/** Special tokens first, so their ids are fixed and small: 0..5. */
export const SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"] as const;

/** Every character the demo's text uses; anything else encodes to <unk>. */
export const CHARACTERS: readonly string[] = Array.from("abcdefghijklmnopqrstuvwxyz0123456789 \n!'(),-.:;=?");

/** token -> id: the special tokens, then the characters in the order above. */
export function demoVocab(): Map<string, number> {
  return new Map([...SPECIAL_TOKENS, ...CHARACTERS].map((t, i) => [t, i]));
}

/** tokenizer.json content. Rust `tokenizers` and @huggingface/tokenizers both read it. */
export function tokenizerJson(): Record<string, unknown> {
  const vocab = demoVocab();
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.map((content) => ({
      id: vocab.get(content),
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: { type: "Fuse" },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      merges: [],
    },
  };
}

/** tokenizer_config.json content: eos is <|im_end|> (the end of a ChatML turn), no BOS added. */
export function tokenizerConfigJson(): Record<string, unknown> {
  const vocab = demoVocab();
  return {
    added_tokens_decoder: Object.fromEntries(
      SPECIAL_TOKENS.map((content) => [
        String(vocab.get(content)),
        { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
      ]),
    ),
    additional_special_tokens: ["<|im_start|>", "<|im_end|>"],
    bos_token: "<s>",
    eos_token: "<|im_end|>",
    pad_token: "<pad>",
    unk_token: "<unk>",
    add_bos_token: false,
    add_eos_token: false,
    // Decoding must give back exactly what was encoded (" ." stays " .").
    clean_up_tokenization_spaces: false,
    model_max_length: 256,
    tokenizer_class: "PreTrainedTokenizerFast",
    chat_template: CHATML_TEMPLATE,
  };
}

/** Writes tokenizer.json and tokenizer_config.json into `dir` (which must exist). */
export async function writeDemoTokenizer(dir: string): Promise<void> {
  await writeFile(join(dir, "tokenizer.json"), JSON.stringify(tokenizerJson(), null, 2) + "\n");
  await writeFile(join(dir, "tokenizer_config.json"), JSON.stringify(tokenizerConfigJson(), null, 2) + "\n");
}
