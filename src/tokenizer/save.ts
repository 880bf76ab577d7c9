// Writes a tokenizer folder (tokenizer.json + tokenizer_config.json) that transformers and tuna load
// with the same special tokens, added tokens and chat template the run used.
import { writeFile, copyFile } from "node:fs/promises";
import { join } from "node:path";
import { readJsonFile } from "../util/json-file.ts";
import type { LoadedTokenizer } from "./load.ts";
import { pathExists } from "../util/fs-checks.ts";
import { effectiveTokenizerClass } from "./tokenizer-class.ts";

/**
 * Copies the tokenizer files of `srcDir` into `dstDir`, adding the tokens `tokenizer` has beyond the
 * source file (as tokenizer.json `added_tokens` and tokenizer_config `added_tokens_decoder`) and its
 * bos/eos/pad and chat template — what `tokenizer.save_pretrained` writes after the peft example's setup.
 */
export async function saveTokenizer(srcDir: string, dstDir: string, tokenizer: LoadedTokenizer, modelType: string): Promise<void> {
  const json = (await readJsonFile(join(srcDir, "tokenizer.json"), "tokenizer")) as { added_tokens?: { id: number }[] };
  const known = new Set((json.added_tokens ?? []).map((t) => t.id));
  const extra = tokenizer.addedTokens.filter((t) => !known.has(t.id));
  json.added_tokens = [
    ...(json.added_tokens ?? []),
    ...extra.map((t) => ({ id: t.id, content: t.content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: t.special })),
  ];
  await writeFile(join(dstDir, "tokenizer.json"), JSON.stringify(json, null, 2));
  const configPath = join(srcDir, "tokenizer_config.json");
  const config = (await pathExists(configPath)) ? ((await readJsonFile(configPath, "tokenizer config")) as Record<string, unknown>) : {};
  const decoder = { ...((config["added_tokens_decoder"] as Record<string, unknown> | undefined) ?? {}) };
  for (const t of extra) {
    decoder[String(t.id)] = { content: t.content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: t.special };
  }
  config["added_tokens_decoder"] = decoder;
  // A folder that reads tokenizer.json as written only because of the model's type (a Mistral or Phi-3 declaring
  // LlamaTokenizer) says so itself, as transformers 5's save_pretrained does: without config.json beside it (an
  // adapter folder), the declared class would rebuild another pipeline. PreTrainedTokenizerFast means "as
  // written" to transformers 4 and 5 alike.
  const declared = typeof config["tokenizer_class"] === "string" ? config["tokenizer_class"] : undefined;
  if (effectiveTokenizerClass(declared, modelType) !== effectiveTokenizerClass(declared, undefined)) {
    config["tokenizer_class"] = "PreTrainedTokenizerFast";
  }
  if (tokenizer.bosToken !== undefined) config["bos_token"] = tokenizer.bosToken;
  if (tokenizer.eosToken !== undefined) config["eos_token"] = tokenizer.eosToken;
  if (tokenizer.padToken !== undefined) config["pad_token"] = tokenizer.padToken;
  if (tokenizer.chatTemplate !== undefined) config["chat_template"] = tokenizer.chatTemplate;
  const special = extra.filter((t) => t.special).map((t) => t.content);
  if (special.length > 0) {
    const previous = Array.isArray(config["additional_special_tokens"]) ? (config["additional_special_tokens"] as string[]) : [];
    config["additional_special_tokens"] = [...new Set([...previous, ...special])];
  }
  await writeFile(join(dstDir, "tokenizer_config.json"), JSON.stringify(config, null, 2));
  if (await pathExists(join(srcDir, "special_tokens_map.json"))) await copyFile(join(srcDir, "special_tokens_map.json"), join(dstDir, "special_tokens_map.json"));
}
