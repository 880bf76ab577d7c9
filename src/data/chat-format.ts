// chat_template_format as the peft SFT example sets it up: the chatml / zephyr templates, their special
// tokens added to the tokenizer, and the embedding size to resize to; or the tokenizer's own template.

import { readFileSync } from "node:fs";
import { Template } from "@huggingface/jinja";
import { addSpecialTokens } from "../tokenizer/added-tokens.ts";
import type { LoadedTokenizer } from "../tokenizer/load.ts";
import { TunaError, errorMessage } from "../util/errors.ts";

export type ChatFormat = "chatml" | "zephyr" | "none";

// Both templates are copied character for character from huggingface/peft examples/sft/utils.py as
// stored at commit 0106572395656923b710306c264596b94d028d05 (read through the code index; the spec cites
// 5d602fd, whose copy was not read). The "\n" after each block tag is removed by trim_blocks, which
// transformers' chat-template environment enables (ImmutableSandboxedEnvironment(trim_blocks=True,
// lstrip_blocks=True), seen in copies of chat_template_utils.py) and so does @huggingface/jinja. The "\n"
// after each {{ ... }} in the zephyr template stays: it renders "<|user|>\n{content}</s>\n". Rendering
// these through transformers itself was not possible here (no Python): the expected strings in the tests
// are derived by hand from these rules.
export const DEFAULT_CHATML_CHAT_TEMPLATE =
  "{% for message in messages %}\n{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}" +
  "{% if loop.last and add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}{% endfor %}";

export const DEFAULT_ZEPHYR_CHAT_TEMPLATE =
  "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n" +
  "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n" +
  "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n" +
  "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

interface FormatTokens {
  user: string;
  assistant: string;
  system: string;
  eos: string;
  bos: string;
  pad: string;
}

// ChatmlSpecialTokens / ZephyrSpecialTokens of the same file, members in declaration order.
const FORMAT_TOKENS: Record<Exclude<ChatFormat, "none">, FormatTokens> = {
  chatml: {
    user: "<|im_start|>user",
    assistant: "<|im_start|>assistant",
    system: "<|im_start|>system",
    eos: "<|im_end|>",
    bos: "<s>",
    pad: "<pad>",
  },
  zephyr: { user: "<|user|>", assistant: "<|assistant|>", system: "<|system|>", eos: "</s>", bos: "<s>", pad: "<pad>" },
};

const TEMPLATES: Record<Exclude<ChatFormat, "none">, string> = {
  chatml: DEFAULT_CHATML_CHAT_TEMPLATE,
  zephyr: DEFAULT_ZEPHYR_CHAT_TEMPLATE,
};

export interface ChatSetup {
  /** The tokenizer with the format's special tokens (for "none": pad = eos when it had no pad). */
  tokenizer: LoadedTokenizer;
  /** The chat template to render conversations with; undefined when there is none. */
  template?: string;
  /** Ids of tokens the vocab did not have; their embedding rows are new. */
  newTokenIds: number[];
  /** Rows the embedding (and lm_head) must have: len(tokenizer) rounded up to 8, never below the model's. */
  resizedVocabSize: number;
}

/** A chat template from a .jinja file; FILE_NOT_FOUND / IO when unreadable, CONFIG_INVALID when it does not parse. */
export function readChatTemplateFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    const missing = (e as NodeJS.ErrnoException).code === "ENOENT";
    throw new TunaError(missing ? "FILE_NOT_FOUND" : "IO", `cannot read chat template ${path}: ${errorMessage(e)}`, { cause: e });
  }
  try {
    new Template(text);
  } catch (e) {
    throw new TunaError("CONFIG_INVALID", `chat template ${path} does not parse: ${errorMessage(e)}. Fix the Jinja syntax.`, {
      cause: e,
    });
  }
  return text;
}

/**
 * Prepare tokenizer and template for `format` as examples/sft/utils.py does. `templatePath` (a .jinja
 * file) replaces the format's template, keeping its special tokens.
 */
export function setupChatFormat(
  tokenizer: LoadedTokenizer,
  format: ChatFormat,
  modelVocabSize: number,
  templatePath?: string,
  tokens: SpecialTokenOverrides = {},
): ChatSetup {
  // TRL sets eos_token first, so a tokenizer without a pad pads with the new EOS; a chat format's own tokens
  // come next, and the overrides win over them.
  const base = format === "none" ? withTokenOverrides(tokenizer, { eosToken: tokens.eosToken }) : tokenizer;
  const setup = formatSetup(base, format, modelVocabSize, templatePath);
  return { ...setup, tokenizer: withTokenOverrides(setup.tokenizer, tokens) };
}

/** TRL's SFTConfig eos_token / pad_token: tokens of the vocabulary that replace the tokenizer's own. */
export interface SpecialTokenOverrides {
  eosToken?: string | undefined;
  padToken?: string | undefined;
}

/**
 * The tokenizer with TRL's eos_token (what ends each text and completion, and the saved tokenizer's EOS) and
 * pad_token in place of its own; each must be a token of the vocabulary, as TRL requires.
 */
function withTokenOverrides(tokenizer: LoadedTokenizer, o: SpecialTokenOverrides): LoadedTokenizer {
  let out = tokenizer;
  for (const [key, token] of [["eos", o.eosToken], ["pad", o.padToken]] as const) {
    if (token === undefined) continue;
    const id = tokenizer.tokenToId(token);
    if (id === undefined) {
      throw new TunaError("CONFIG_INVALID", `${key}_token "${token}" is not a token of the tokenizer's vocabulary; give one it has (TRL requires that too), or leave ${key}_token unset.`);
    }
    out = key === "eos" ? { ...out, eosToken: token, eosTokenId: id } : { ...out, padToken: token, padTokenId: id };
  }
  return out;
}

function formatSetup(tokenizer: LoadedTokenizer, format: ChatFormat, modelVocabSize: number, templatePath: string | undefined): ChatSetup {
  const fileTemplate = templatePath === undefined ? undefined : readChatTemplateFile(templatePath);
  if (format === "none") {
    // peft sets pad_token = eos_token unconditionally; a tokenizer that has a pad keeps it here.
    const withPad =
      tokenizer.padToken === undefined && tokenizer.eosToken !== undefined
        ? {
            ...tokenizer,
            padToken: tokenizer.eosToken,
            ...(tokenizer.eosTokenId === undefined ? {} : { padTokenId: tokenizer.eosTokenId }),
          }
        : tokenizer;
    const template = fileTemplate ?? tokenizer.chatTemplate;
    // No new tokens: the peft example does not resize the embeddings in this case.
    return { tokenizer: withPad, ...(template === undefined ? {} : { template }), newTokenIds: [], resizedVocabSize: modelVocabSize };
  }
  const tokens = FORMAT_TOKENS[format];
  const template = fileTemplate ?? TEMPLATES[format];
  // from_pretrained(pad_token, bos_token, eos_token, additional_special_tokens=list(enum)) adds the
  // missing ones in SPECIAL_TOKENS_ATTRIBUTES order: bos, eos, (unk, sep) pad, (cls, mask), additional.
  const order = [tokens.bos, tokens.eos, tokens.pad, tokens.user, tokens.assistant, tokens.system, tokens.eos, tokens.bos, tokens.pad];
  const { tokenizer: extended, newTokenIds } = addSpecialTokens(tokenizer, {
    tokens: order,
    bosToken: tokens.bos,
    eosToken: tokens.eos,
    padToken: tokens.pad,
    chatTemplate: template,
  });
  // resize_token_embeddings(len(tokenizer), pad_to_multiple_of=8); tuna never shrinks a larger embedding.
  const resizedVocabSize = Math.max(modelVocabSize, Math.ceil(extended.size / 8) * 8);
  return { tokenizer: extended, template, newTokenIds, resizedVocabSize };
}
