// `tuna serve`'s HTTP server (Node's own http module): the OpenAI API subset — GET /v1/models, POST
// /v1/completions and /v1/chat/completions (JSON or server-sent events), GET /health — over the served models.
// Requests generate together (continuous batching, batcher.ts; a bounded queue holds the rest); every failure is
// an HTTP error in OpenAI's shape and the server goes on serving. A client that goes away stops its generation.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { randomUUID, timingSafeEqual } from "node:crypto";
import { TunaError, errorMessage } from "../util/errors.ts";
import { HttpError, parseGenerationRequest, type GenerationRequest } from "./requests.ts";
import { createBatcher, type Batcher } from "./batcher.ts";
import type { RunResult, ServedModel } from "./run-request.ts";

export interface ServeOptions {
  /** Models by the name requests select them with; the first is the base. */
  models: ServedModel[];
  /** Adapters that failed to load: requests for them get this error (503) instead of "unknown model". */
  failed?: ReadonlyMap<string, string>;
  /** Bearer token clients must send; undefined = none needed. */
  apiKey?: string;
  /** Requests that generate together (continuous batching). */
  maxBatch: number;
  /** Requests that may wait for a place in the batch (more get 429). */
  maxQueue: number;
  /** Finished requests' KV caches kept for prompts that continue them (chat turns); 0 = none. */
  prefixCache?: number;
  /** Largest request body accepted, in bytes. */
  maxBodyBytes?: number;
  /** Told about each request's failure that is the server's fault. */
  onError?: (message: string) => void;
  /** One line per request when it ends: method, path, status, milliseconds (an access log). */
  onRequest?: (line: string) => void;
}

const MAX_BODY = 1 << 20;

function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(body);
}

async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const b = chunk as Buffer;
    size += b.length;
    if (size > limit) throw new HttpError(413, `the request body is larger than ${limit} bytes`, "invalid_request_error", "body_too_large");
    chunks.push(b);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown;
  } catch (e) {
    throw new HttpError(400, `the request body is not valid JSON (${errorMessage(e)})`, "invalid_request_error", "invalid_json");
  }
}

function authorized(req: IncomingMessage, key: string | undefined): boolean {
  if (key === undefined) return true;
  const header = req.headers.authorization ?? "";
  const given = Buffer.from(header.startsWith("Bearer ") ? header.slice(7) : "");
  const want = Buffer.from(key);
  return given.length === want.length && timingSafeEqual(given, want);
}

function completionBody(req: GenerationRequest, id: string, created: number, r: RunResult): unknown {
  const usage = { prompt_tokens: r.promptTokens, completion_tokens: r.completionTokens, total_tokens: r.promptTokens + r.completionTokens };
  if (req.kind === "completion") {
    return { id, object: "text_completion", created, model: req.model, choices: [{ index: 0, text: r.text, logprobs: null, finish_reason: r.finishReason }], usage };
  }
  return {
    id,
    object: "chat.completion",
    created,
    model: req.model,
    choices: [{ index: 0, message: { role: "assistant", content: r.text }, logprobs: null, finish_reason: r.finishReason }],
    usage,
  };
}

function chunkBody(req: GenerationRequest, id: string, created: number, text: string | null, finish: RunResult["finishReason"] | null, first: boolean): unknown {
  if (req.kind === "completion") {
    return { id, object: "text_completion", created, model: req.model, choices: [{ index: 0, text: text ?? "", logprobs: null, finish_reason: finish }] };
  }
  const delta = finish !== null ? {} : { ...(first ? { role: "assistant" } : {}), content: text ?? "" };
  return { id, object: "chat.completion.chunk", created, model: req.model, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] };
}

export function createServeServer(options: ServeOptions): Server & { batcher: Batcher } {
  const byName = new Map(options.models.map((m) => [m.name, m]));
  const base = options.models[0];
  if (base === undefined) throw new TunaError("INTERNAL", "createServeServer needs at least the base model");
  const batcher = createBatcher({
    base: base.session.decoder.model,
    maxBatch: options.maxBatch,
    maxQueue: options.maxQueue,
    prefixCache: options.prefixCache ?? 0,
    ...(options.onError === undefined ? {} : { onError: options.onError }),
  });
  const limit = options.maxBodyBytes ?? MAX_BODY;

  const generateFor = async (kind: "completion" | "chat", req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const request = parseGenerationRequest(kind, await readJson(req, limit));
    const model = byName.get(request.model);
    if (model === undefined) {
      const failure = options.failed?.get(request.model);
      if (failure !== undefined) throw new HttpError(503, `model ${request.model} failed to load: ${failure}`, "server_error", "model_unavailable", "model");
      throw new HttpError(404, `the model ${JSON.stringify(request.model)} does not exist; GET /v1/models lists ${[...byName.keys()].join(", ")}`, "invalid_request_error", "model_not_found", "model");
    }
    const client = { gone: false };
    res.on("close", () => {
      if (!res.writableFinished) client.gone = true;
    });
    const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    if (!request.stream) {
      const result = await batcher.submit(model, request, () => undefined, () => client.gone);
      send(res, 200, JSON.stringify(completionBody(request, id, created, result)));
      return;
    }
    const state = { first: true };
    const event = (data: unknown): void => {
      if (!client.gone) res.write(`data: ${JSON.stringify(data)}\n\n`);
    };
    // Headers only once text comes: a refusal (queue full, context too long) is still a plain HTTP error.
    const started = (): void => {
      if (res.headersSent) return;
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
    };
    const result = await batcher.submit(
      model,
      request,
      (text) => {
        started();
        event(chunkBody(request, id, created, text, null, state.first));
        state.first = false;
      },
      () => client.gone,
    );
    started();
    if (state.first && kind === "chat") event(chunkBody(request, id, created, "", null, true));
    event(chunkBody(request, id, created, null, result.finishReason, false));
    if (request.streamUsage) {
      const usage = { prompt_tokens: result.promptTokens, completion_tokens: result.completionTokens, total_tokens: result.promptTokens + result.completionTokens };
      event({ id, object: request.kind === "chat" ? "chat.completion.chunk" : "text_completion", created, model: request.model, choices: [], usage });
    }
    if (!client.gone) res.end("data: [DONE]\n\n");
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const started = performance.now();
    res.on("close", () => {
      options.onRequest?.(`${req.method ?? "?"} ${url.pathname} ${res.statusCode}${res.writableFinished ? "" : " (client gone)"} ${(performance.now() - started).toFixed(0)} ms`);
    });
    const handle = async (): Promise<void> => {
      if (req.method === "GET" && url.pathname === "/health") {
        send(res, 200, JSON.stringify({ status: "ok" }));
        return;
      }
      if (!authorized(req, options.apiKey)) throw new HttpError(401, "a valid API key is needed: send Authorization: Bearer <key>", "authentication_error", "invalid_api_key");
      if (req.method === "GET" && url.pathname === "/v1/models") {
        const data = options.models.map((m) => ({ id: m.name, object: "model", created: 0, owned_by: "tuna" }));
        send(res, 200, JSON.stringify({ object: "list", data }));
        return;
      }
      if (req.method === "POST" && url.pathname === "/v1/completions") return generateFor("completion", req, res);
      if (req.method === "POST" && url.pathname === "/v1/chat/completions") return generateFor("chat", req, res);
      throw new HttpError(404, `no route ${req.method ?? ""} ${url.pathname}; tuna serves GET /v1/models, POST /v1/completions, POST /v1/chat/completions, GET /health`, "not_found_error", "unknown_route");
    };
    handle().catch((e: unknown) => {
      const error = e instanceof HttpError ? e : new HttpError(500, `internal error: ${errorMessage(e)}`, "server_error", "internal_error");
      if (error.status >= 500) options.onError?.(error.message);
      const headers: Record<string, string> = error.status === 429 ? { "retry-after": "1" } : {};
      if (res.headersSent) {
        // Mid-stream: the status is already sent; the error goes as a last event.
        if (!res.writableEnded) res.end(`data: ${error.body()}\n\n`);
        return;
      }
      send(res, error.status, error.body(), headers);
    });
  });
  return Object.assign(server, { batcher });
}
