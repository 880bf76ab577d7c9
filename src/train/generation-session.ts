// A model ready to generate: its loaded weights, tokenizer, generation_config and a KV-cache decoder, and
// what generate, chat, the demos and serve do with one (sampling defaults, chat templates, reply text).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { TunaError } from "../util/errors.ts";
import { readJsonFile } from "../util/json-file.ts";
import type { Backend } from "../backend/types.ts";
import { parseGenerationConfig, type GenerationConfig } from "../hf/generation-config.ts";
import { tokenizerDirFor, type OpenedModel } from "./open-model.ts";
import { templateVariables } from "../data/tokenize.ts";
import { readChatTemplateFile } from "../data/chat-format.ts";
import { createCausalLm } from "../model/causal-lm/model.ts";
import { createDecoder, type Decoder } from "../model/causal-lm/decode.ts";
import { resolveGeneration, type GenerateResult, type GenerationOverrides, type ResolvedGeneration } from "../model/generate.ts";
import { loadTokenizer, type LoadedTokenizer } from "../tokenizer/load.ts";
import { renderChatTemplate, type ChatMessage } from "../tokenizer/chat-template.ts";

export interface GenerationSession {
  opened: OpenedModel;
  tokenizer: LoadedTokenizer;
  generationConfig: GenerationConfig | undefined;
  decoder: Decoder;
}

/**
 * The session of weights already on `backend` (`tuna serve` attaches adapters to one base): the tokenizer (the
 * adapter's when it ships one), the model's generation defaults, a model and its decoder.
 */
export async function sessionOver(backend: Backend, opened: OpenedModel, adapterDir: string | undefined): Promise<GenerationSession> {
  const tokenizer = await loadTokenizer(tokenizerDirFor(opened.dir, adapterDir), opened.cfg.modelType);
  const genPath = join(opened.dir, "generation_config.json");
  const generationConfig = existsSync(genPath) ? parseGenerationConfig(await readJsonFile(genPath, "generation config"), genPath) : undefined;
  const model = createCausalLm(backend, opened.params, { checkpointing: false, seed: 0 });
  return { opened, tokenizer, generationConfig, decoder: createDecoder(model) };
}

export function resolveFor(session: GenerationSession, overrides: GenerationOverrides): ResolvedGeneration {
  return resolveGeneration(overrides, session.generationConfig, session.opened.cfg.eosTokenIds, session.tokenizer.eosTokenId);
}

/** The chat template: --chat_template FILE, else the tokenizer's; a clear error when there is neither. */
export function chatTemplateFor(session: GenerationSession, file: string | undefined): string {
  if (file !== undefined) return readChatTemplateFile(file);
  const template = session.tokenizer.chatTemplate;
  if (template === undefined) {
    throw new TunaError(
      "CONFIG_INVALID",
      `the tokenizer of ${session.opened.dir} has no chat template (no "chat_template" in tokenizer_config.json, no chat_template.jinja). ` +
        `Pass --chat_template FILE with a Jinja template, or use a model (an instruct/chat variant) that ships one.`,
    );
  }
  return template;
}

/** Token ids of a conversation rendered with add_generation_prompt; the template places any BOS itself. */
export function encodeChat(session: GenerationSession, template: string, messages: ChatMessage[]): number[] {
  const t = session.tokenizer;
  const text = renderChatTemplate(template, messages, { ...templateVariables(t), addGenerationPrompt: true });
  return t.encode(text, { addSpecialTokens: false });
}

/** The reply's text: the tokens without a final eos, special tokens skipped. */
export function replyText(session: GenerationSession, r: GenerateResult): string {
  const tokens = r.finishReason === "eos" ? r.tokens.slice(0, -1) : r.tokens;
  return session.tokenizer.decode(tokens, { skipSpecialTokens: true });
}

