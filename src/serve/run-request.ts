// A request on a served model made ready to generate: the prompt (text, or messages through the chat
// template), the sampling it asks for and the context bound. The batcher (batcher.ts) runs it.
import type { SamplingSettings } from "../model/sampling.ts";
import { renderChatTemplate } from "../tokenizer/chat-template.ts";
import { templateVariables } from "../data/tokenize.ts";
import { resolveFor, type GenerationSession } from "../train/generation-session.ts";
import { HttpError, type GenerationRequest } from "./requests.ts";

/** A model the server answers for: a generation session (base, or base + one adapter) and its chat template. */
export interface ServedModel {
  name: string;
  session: GenerationSession;
  chatTemplate: string | undefined;
}

export interface RunResult {
  text: string;
  finishReason: "stop" | "length";
  promptTokens: number;
  completionTokens: number;
}

/** The prompt's token ids, with the errors a client can fix as HTTP 400. */
export function promptIds(model: ServedModel, req: GenerationRequest): number[] {
  const t = model.session.tokenizer;
  if (req.messages !== null) {
    if (model.chatTemplate === undefined) {
      throw new HttpError(400, `model ${model.name} has no chat template; use /v1/completions, or start tuna serve with --chat_template FILE`, "invalid_request_error", "no_chat_template");
    }
    const text = renderChatTemplate(model.chatTemplate, req.messages, { ...templateVariables(t), addGenerationPrompt: true });
    return t.encode(text, { addSpecialTokens: false });
  }
  if (req.promptIds !== null) {
    const V = model.session.opened.cfg.vocabSize;
    const bad = req.promptIds.find((id) => id >= V);
    if (bad !== undefined) throw new HttpError(400, `prompt token ${bad} is outside the model's vocabulary of ${V}`, "invalid_request_error", "invalid_value", "prompt");
    return req.promptIds;
  }
  const ids = t.encode(req.prompt ?? "");
  if (ids.length === 0) throw new HttpError(400, "the prompt has no tokens", "invalid_request_error", "invalid_value", "prompt");
  return ids;
}

/** What a request's generation needs, checked: its prompt, token budget and sampling. Client errors are HttpError 400. */
export interface PlannedRequest {
  prompt: number[];
  maxTokens: number;
  sampling: SamplingSettings;
  eosTokenIds: readonly number[];
}

export function planRequest(model: ServedModel, req: GenerationRequest): PlannedRequest {
  const prompt = promptIds(model, req);
  const session = model.session;
  const context = session.opened.cfg.maxPositionEmbeddings;
  // Without max_tokens a chat answer may run to the end of the context, as OpenAI's API has it.
  const maxTokens = req.maxTokens ?? context - prompt.length;
  if (prompt.length + maxTokens > context || prompt.length >= context) {
    throw new HttpError(
      400,
      `this model's maximum context length is ${context} tokens; the request has ${prompt.length} prompt tokens and asks for ${maxTokens} more. Shorten the prompt or lower max_tokens.`,
      "invalid_request_error",
      "context_length_exceeded",
      "messages",
    );
  }
  const greedy = req.temperature === 0;
  const sampling = { doSample: !greedy, temperature: greedy ? 1 : req.temperature, topK: 0, topP: req.topP, repetitionPenalty: 1 };
  return { prompt, maxTokens, sampling, eosTokenIds: req.ignoreEos ? [] : resolveFor(session, {}).eosTokenIds };
}
