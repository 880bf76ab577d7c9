// Reading a tokenizer folder's JSON side files: tokenizer_config.json over special_tokens_map.json,
// special tokens as strings or AddedToken dicts, and chat templates (inline, named list, or .jinja files).

import { existsSync } from "node:fs";
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { TunaError, errorMessage } from "../util/errors.ts";

export type JsonObject = Record<string, unknown>;

export const SPECIAL_TOKEN_KEYS = [
  "bos_token",
  "eos_token",
  "unk_token",
  "sep_token",
  "pad_token",
  "cls_token",
  "mask_token",
] as const;

export type SpecialTokenKey = (typeof SPECIAL_TOKEN_KEYS)[number];

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A JSON file that must hold an object; undefined when absent and not required. */
export async function readJsonObject(path: string, what: string): Promise<JsonObject | undefined> {
  if (!existsSync(path)) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, "utf8"));
  } catch (e) {
    throw new TunaError("FILE_FORMAT", `${what} ${path} is not valid JSON: ${errorMessage(e)}`, { cause: e });
  }
  if (!isObject(parsed)) throw new TunaError("FILE_FORMAT", `${what} ${path} must hold a JSON object.`);
  return parsed;
}

/** A special token written as "text" or as an AddedToken dict {"content": "text", ...}; null means none. */
export function specialTokenText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (isObject(value) && typeof value.content === "string") return value.content;
  return undefined;
}

export interface TokenizerSettings {
  /** tokenizer_config.json with special_tokens_map.json beneath it and every special token as a string. */
  config: JsonObject;
  special: Partial<Record<SpecialTokenKey, string>>;
  additionalSpecialTokens: string[];
  chatTemplate?: string;
  chatTemplates: Record<string, string>;
}

/** Read and merge the side files of a tokenizer folder (all optional). */
export async function readTokenizerSettings(folder: string): Promise<TokenizerSettings> {
  const configPath = join(folder, "tokenizer_config.json");
  const config = (await readJsonObject(configPath, "tokenizer config")) ?? {};
  const map = (await readJsonObject(join(folder, "special_tokens_map.json"), "special tokens map")) ?? {};
  return tokenizerSettingsOf(config, map, await readChatTemplates(folder, config.chat_template, configPath));
}

/** The settings of tokenizer_config.json (`config`) over special_tokens_map.json (`map`), with the chat templates found. */
export function tokenizerSettingsOf(config: JsonObject, map: JsonObject, chatTemplates: Record<string, string>): TokenizerSettings {
  const isSpecialKey = (key: string): boolean => (SPECIAL_TOKEN_KEYS as readonly string[]).includes(key);
  const merged: JsonObject = Object.fromEntries(Object.entries(config).filter(([key]) => !isSpecialKey(key)));
  const special: Partial<Record<SpecialTokenKey, string>> = {};
  for (const key of SPECIAL_TOKEN_KEYS) {
    // tokenizer_config wins; a null there (no token) lets special_tokens_map supply one.
    const text = specialTokenText(config[key]) ?? specialTokenText(map[key]);
    if (text !== undefined) merged[key] = special[key] = text;
  }
  const additional = Array.isArray(config.additional_special_tokens)
    ? config.additional_special_tokens
    : Array.isArray(map.additional_special_tokens)
      ? map.additional_special_tokens
      : [];
  const additionalSpecialTokens = additional.map(specialTokenText).filter((t): t is string => t !== undefined);
  merged.additional_special_tokens = additionalSpecialTokens;
  const settings: TokenizerSettings = { config: merged, special, additionalSpecialTokens, chatTemplates };
  if (chatTemplates.default !== undefined) settings.chatTemplate = chatTemplates.default;
  return settings;
}

/**
 * Named chat templates. tokenizer_config.json holds a string (the default), a list of {name, template},
 * or nothing; newer transformers write chat_template.jinja and additional_chat_templates/<name>.jinja.
 */
async function readChatTemplates(folder: string, inline: unknown, configPath: string): Promise<Record<string, string>> {
  const named: Record<string, string> = {};
  if (typeof inline === "string") {
    named.default = inline;
  } else if (Array.isArray(inline)) {
    for (const [i, entry] of inline.entries()) {
      if (!isObject(entry) || typeof entry.name !== "string" || typeof entry.template !== "string") {
        throw new TunaError(
          "FILE_FORMAT",
          `${configPath}: chat_template[${i}] must be {"name": string, "template": string}.`,
        );
      }
      named[entry.name] = entry.template;
    }
  } else if (isObject(inline)) {
    for (const [name, template] of Object.entries(inline)) if (typeof template === "string") named[name] = template;
  } else if (inline !== undefined && inline !== null) {
    throw new TunaError("FILE_FORMAT", `${configPath}: chat_template must be a string or a list of named templates.`);
  }
  const jinjaPath = join(folder, "chat_template.jinja");
  if (named.default === undefined && existsSync(jinjaPath)) named.default = await readFile(jinjaPath, "utf8");
  const extraDir = join(folder, "additional_chat_templates");
  if (existsSync(extraDir)) {
    for (const file of (await readdir(extraDir)).sort()) {
      const name = file.replace(/\.jinja$/, "");
      if (file.endsWith(".jinja") && named[name] === undefined) named[name] = await readFile(join(extraDir, file), "utf8");
    }
  }
  return named;
}
