// Shared by the LoRA tests: the tiny Llama the PEFT fixtures were made with, and temp folders.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseModelConfig, type ModelConfig } from "../../src/hf/config.ts";

/** The LlamaConfig of test/lora/fixtures/make_peft_fixtures.py's tiny(). */
export function tinyLlama(options: { tie?: boolean; vocab?: number } = {}): ModelConfig {
  return parseModelConfig(
    {
      model_type: "llama",
      vocab_size: options.vocab ?? 64,
      hidden_size: 16,
      intermediate_size: 40,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      max_position_embeddings: 128,
      tie_word_embeddings: options.tie ?? false,
    },
    "tiny llama",
  );
}

export const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;

export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "tuna-lora-"));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
