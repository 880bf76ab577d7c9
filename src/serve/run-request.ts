// One request's generation on a served model: the prompt (text, or messages through the chat template), the
// sampling the request asks for, stop sequences, the context bound, and a way to stop early when the client
// goes away. Text is handed out as it is decoded (for server-sent events) and returned whole.
import { createTextStream, generate } from "../model/generate.ts";
import { renderChatTemplate } from "../tokenizer/chat-template.ts";
import { templateVariables } from "../data/tokenize.ts";
import { createRng } from "../util/random.ts";
import { resolveFor, type GenerationSession } from "../train/generation-session.ts";
import { HttpError, type GenerationRequest } from "./requests.ts";
import { createStopText } from "./stop-text.ts";

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

/** Thrown inside the token callback to end generation early; never leaves runRequest. */
class EndGeneration extends Error {}

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
  const ids = t.encode(req.prompt ?? "");
  if (ids.length === 0) throw new HttpError(400, "the prompt has no tokens", "invalid_request_error", "invalid_value", "prompt");
  return ids;
}

export async function runRequest(model: ServedModel, req: GenerationRequest, onText: (text: string) => void, aborted: () => boolean): Promise<RunResult> {
  const prompt = promptIds(model, req);
  const session = model.session;
  const context = session.opened.cfg.maxPositionEmbeddings;
  const resolved = resolveFor(session, {});
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
  const eos = new Set(resolved.eosTokenIds);
  const stream = createTextStream((ids) => session.tokenizer.decode(ids, { skipSpecialTokens: true }));
  const stops = createStopText(req.stop);
  let text = "";
  let completionTokens = 0;
  const state = { stopped: false };
  const emit = (piece: string): void => {
    if (piece.length === 0) return;
    text += piece;
    onText(piece);
  };
  if (maxTokens === 0) return { text: "", finishReason: "length", promptTokens: prompt.length, completionTokens: 0 };
  try {
    const result = await generate(session.decoder, prompt, {
      maxNewTokens: maxTokens,
      eosTokenIds: resolved.eosTokenIds,
      sampling,
      rng: createRng(req.seed),
      maxPositions: context,
      yieldBetweenTokens: true,
      onToken: (token) => {
        if (aborted()) throw new EndGeneration("client gone");
        if (eos.has(token)) return;
        completionTokens++;
        const out = stops.push(stream.push(token));
        emit(out.emit);
        if (out.stopped) {
          state.stopped = true;
          throw new EndGeneration("stop sequence");
        }
      },
    });
    const rest = stops.push(stream.flush());
    emit(rest.emit);
    if (rest.stopped) return { text, finishReason: "stop", promptTokens: prompt.length, completionTokens };
    emit(stops.flush());
    return { text, finishReason: result.finishReason === "eos" ? "stop" : "length", promptTokens: prompt.length, completionTokens };
  } catch (e) {
    if (!(e instanceof EndGeneration)) throw e;
    return { text, finishReason: state.stopped ? "stop" : "length", promptTokens: prompt.length, completionTokens };
  }
}
