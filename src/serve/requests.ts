// The OpenAI API subset `tuna serve` speaks: request bodies of /v1/completions and /v1/chat/completions parsed and
// checked (each problem an HTTP 400 in OpenAI's error shape), and the error type every handler throws.
import { z } from "zod";
import type { ChatMessage } from "../tokenizer/chat-template.ts";

/** An error answered as OpenAI answers it: {"error": {"message", "type", "param", "code"}} with this status. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: "invalid_request_error" | "authentication_error" | "rate_limit_error" | "server_error" | "not_found_error",
    readonly code: string | null = null,
    readonly param: string | null = null,
  ) {
    super(message);
  }

  body(): string {
    return JSON.stringify({ error: { message: this.message, type: this.type, param: this.param, code: this.code } });
  }
}

/** What one generation request asks, whichever endpoint it came through. */
export interface GenerationRequest {
  kind: "completion" | "chat";
  model: string;
  prompt: string | null;
  /** /v1/completions with the prompt given as token ids (OpenAI's API allows an array of integers). */
  promptIds: number[] | null;
  messages: ChatMessage[] | null;
  /** null (a chat request without max_tokens): up to the end of the model's context. */
  maxTokens: number | null;
  temperature: number;
  topP: number;
  stop: string[];
  seed: number;
  stream: boolean;
  /** stream_options.include_usage: a last chunk with the token counts (and no choices). */
  streamUsage: boolean;
  /** vLLM's ignore_eos extension: generate max_tokens tokens whatever comes (benchmarks). */
  ignoreEos: boolean;
}

const stop = z.union([z.string(), z.array(z.string()).max(4)]).nullish();
const common = {
  model: z.string().min(1),
  max_tokens: z.number().int().min(0).nullish(),
  max_completion_tokens: z.number().int().min(0).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  n: z.number().int().nullish(),
  stop,
  seed: z.number().int().nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().nullish() }).nullish(),
  ignore_eos: z.boolean().nullish(),
};

const completionSchema = z.looseObject({ ...common, prompt: z.union([z.string(), z.array(z.number().int().min(0)).min(1)]) });
const chatSchema = z.looseObject({
  ...common,
  messages: z
    .array(
      z.looseObject({
        role: z.enum(["system", "user", "assistant", "developer"]),
        // Text, or OpenAI's content parts of type "text" (other kinds are refused below).
        content: z.union([z.string(), z.array(z.looseObject({ type: z.string(), text: z.string().optional() }))]),
      }),
    )
    .min(1),
});

function invalid(error: z.ZodError): HttpError {
  const issue = error.issues[0];
  const param = issue?.path.join(".") ?? null;
  return new HttpError(400, `invalid request: ${param === null || param === "" ? "" : `${param}: `}${issue?.message ?? "malformed body"}`, "invalid_request_error", "invalid_value", param || null);
}

/** Parses a request body (already JSON-decoded) for the endpoint; HttpError 400 says what is wrong. */
type ChatBody = z.infer<typeof chatSchema>;

function chatMessages(b: ChatBody): ChatMessage[] {
  return b.messages.map((m, i) => {
    const content =
      typeof m.content === "string"
        ? m.content
        : m.content
            .map((part, j) => {
              if (part.type !== "text" || part.text === undefined) {
                throw new HttpError(400, `messages[${i}].content[${j}]: only text parts are supported, not ${JSON.stringify(part.type)}`, "invalid_request_error", "unsupported_value", `messages.${i}.content`);
              }
              return part.text;
            })
            .join("");
    // OpenAI's "developer" role is the system role of older models.
    return { role: m.role === "developer" ? "system" : m.role, content };
  });
}

/**
 * Request fields tuna serve does not implement: refused by name rather than ignored, since each changes what
 * the client gets back (null and false mean "off" and pass).
 */
const UNSUPPORTED_FIELDS: Readonly<Record<string, string>> = {
  logprobs: "log-probabilities are not returned",
  top_logprobs: "log-probabilities are not returned",
  echo: "the prompt is not echoed",
  best_of: "one candidate is generated",
  suffix: "insertion is not supported",
  tools: "tool calling is not supported",
  tool_choice: "tool calling is not supported",
  functions: "function calling is not supported",
  function_call: "function calling is not supported",
  response_format: "structured output is not supported",
  logit_bias: "logit biases are not supported",
  presence_penalty: "presence penalties are not supported",
  frequency_penalty: "frequency penalties are not supported",
};

function refuseUnsupported(body: unknown): void {
  if (typeof body !== "object" || body === null) return;
  for (const [field, why] of Object.entries(UNSUPPORTED_FIELDS)) {
    const value = (body as Record<string, unknown>)[field];
    if (value === undefined || value === null || value === false || value === 0 || (Array.isArray(value) && value.length === 0)) continue;
    throw new HttpError(400, `${field} is not supported by tuna serve: ${why}`, "invalid_request_error", "unsupported_parameter", field);
  }
}

/** Parses a request body (already JSON-decoded) for the endpoint; HttpError 400 says what is wrong. */
export function parseGenerationRequest(kind: "completion" | "chat", body: unknown): GenerationRequest {
  refuseUnsupported(body);
  let prompt: string | null = null;
  let promptIds: number[] | null = null;
  let messages: ChatMessage[] | null = null;
  let b: z.infer<typeof completionSchema> | ChatBody;
  if (kind === "completion") {
    const parsed = completionSchema.safeParse(body);
    if (!parsed.success) throw invalid(parsed.error);
    b = parsed.data;
    if (typeof parsed.data.prompt === "string") prompt = parsed.data.prompt;
    else promptIds = parsed.data.prompt;
  } else {
    const parsed = chatSchema.safeParse(body);
    if (!parsed.success) throw invalid(parsed.error);
    b = parsed.data;
    messages = chatMessages(parsed.data);
  }
  if (b.n != null && b.n !== 1) throw new HttpError(400, "n must be 1: tuna serve returns one choice per request", "invalid_request_error", "unsupported_value", "n");
  const stops = b.stop == null ? [] : typeof b.stop === "string" ? [b.stop] : b.stop;
  if (stops.some((s) => s.length === 0)) throw new HttpError(400, "stop sequences must not be empty", "invalid_request_error", "invalid_value", "stop");
  return {
    kind,
    model: b.model,
    prompt,
    promptIds,
    messages,
    maxTokens: b.max_completion_tokens ?? b.max_tokens ?? (kind === "completion" ? 16 : null),
    temperature: b.temperature ?? 1,
    topP: b.top_p ?? 1,
    stop: stops,
    seed: b.seed ?? 0,
    stream: b.stream ?? false,
    streamUsage: b.stream_options?.include_usage === true,
    ignoreEos: b.ignore_eos === true,
  };
}
