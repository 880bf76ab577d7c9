// The tokenization job run on worker threads: each worker loads the tokenizer once (per setup), then
// turns chunks of normalized examples into TokenizedExamples. Also callable in-process for small splits.
import { loadTokenizer } from "../tokenizer/load.ts";
import { setupChatFormat, type ChatFormat } from "./chat-format.ts";
import { tokenizeExample, type TokenizeContext } from "./tokenize.ts";
import type { Example, TokenizedExample } from "./types.ts";
import { registerWorkerJobs } from "../util/worker-pool.ts";

export const TOKENIZE_JOB_URL = import.meta.url;

/** Everything a worker needs to rebuild the exact tokenizer and context of the main thread. */
export interface TokenizerRecipe {
  tokenizerDir: string;
  /** The model's config.json model_type (transformers 5's tokenizer class depends on it). */
  modelType: string;
  /** TRL's eos_token / pad_token in place of the tokenizer's. */
  eosToken?: string;
  padToken?: string;
  chatFormat: ChatFormat;
  templatePath?: string;
  modelVocabSize: number;
  options: Omit<TokenizeContext, "tokenizer" | "template" | "row" | "where" | "counters">;
}

export interface TokenizeChunk {
  recipe: TokenizerRecipe;
  examples: Example[];
  firstRow: number;
  /** Each example's origin for messages ("data/train.jsonl:17"). */
  where?: string[];
}

export interface TokenizeChunkResult {
  examples: TokenizedExample[];
  boundaryFallbacks: number;
}

const contexts = new Map<string, Promise<Pick<TokenizeContext, "tokenizer" | "template">>>();

async function contextFor(recipe: TokenizerRecipe): Promise<Pick<TokenizeContext, "tokenizer" | "template">> {
  const key = JSON.stringify([recipe.tokenizerDir, recipe.modelType, recipe.chatFormat, recipe.templatePath, recipe.modelVocabSize, recipe.eosToken, recipe.padToken]);
  let ctx = contexts.get(key);
  if (ctx === undefined) {
    ctx = loadTokenizer(recipe.tokenizerDir, recipe.modelType).then((base) => {
      const setup = setupChatFormat(base, recipe.chatFormat, recipe.modelVocabSize, recipe.templatePath, { eosToken: recipe.eosToken, padToken: recipe.padToken });
      return setup.template === undefined ? { tokenizer: setup.tokenizer } : { tokenizer: setup.tokenizer, template: setup.template };
    });
    contexts.set(key, ctx);
  }
  return ctx;
}

export async function tokenizeChunk(chunk: TokenizeChunk): Promise<TokenizeChunkResult> {
  const base = await contextFor(chunk.recipe);
  const counters = { boundaryFallbacks: 0 };
  const examples = chunk.examples.map((example, i) =>
    tokenizeExample(example, {
      ...chunk.recipe.options,
      ...base,
      row: chunk.firstRow + i,
      ...(chunk.where?.[i] === undefined ? {} : { where: chunk.where[i] }),
      counters,
    }),
  );
  return { examples, boundaryFallbacks: counters.boundaryFallbacks };
}

registerWorkerJobs({ tokenizeChunk });
