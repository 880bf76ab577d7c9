// `tuna serve <model> [--adapter NAME=DIR ...]`: the OpenAI API subset over HTTP (src/serve/server.ts) for the
// base model and each adapter, selected by the request's "model". Binds to 127.0.0.1 unless told otherwise.
import type { AddressInfo } from "node:net";
import { TunaError, errorMessage } from "../../util/errors.ts";
import type { CliOutput } from "../output.ts";
import { createServeServer } from "../../serve/server.ts";
import type { ServedModel } from "../../serve/run-request.ts";
import { SHARED_HELP, SHARED_OPTIONS, openGenerationSession, parseFlags, sharedSettings, type SharedValues } from "./generate.ts";
import { sessionOver, type GenerationSession } from "../../train/generation-session.ts";
import { readAdapter, type LoraAdapter } from "../../lora/adapter-files.ts";
import { withAdapter } from "../../model/causal-lm/lora-views.ts";
import { readChatTemplateFile } from "../../data/chat-format.ts";

/** The shared generation flags that choose how the model is loaded (the rest are per request here). */
const MODEL_FLAGS = ["device", "bf16", "use_4bit_quantization", "bnb_4bit_quant_type", "use_nested_quant", "use_8bit_quantization", "revision"];

const HELP = `usage: tuna serve <model folder | hub id> [--adapter NAME=DIR ...] [options]

Serves the model over HTTP with the OpenAI API: GET /v1/models, POST /v1/completions and
/v1/chat/completions (streaming with server-sent events or not; temperature, top_p, max_tokens, stop, seed),
GET /health. Requests choose the base (by --served_model_name) or an adapter (by its NAME) with "model".
Up to --max_batch requests generate together (continuous batching: a request joins when a place frees and
leaves when done; requests for different adapters share the base's GEMMs in one batch, each adapter adding
its own LoRA product to its rows); others wait in a queue of --max_queue (more get HTTP 429). The adapters
share the base's weights in memory (one copy of the base, small LoRA tensors per adapter; a DoRA adapter or
one that trained embedding rows decodes beside the batch, the latter with its own copy).
  --adapter NAME=DIR             a PEFT LoRA adapter served as NAME (repeat for more)
  --served_model_name NAME       the base model's name in requests (default: the model argument)
  --host HOST                    the address to bind (default 127.0.0.1: this machine only)
  --port N                       the port (default 8000; 0 picks a free one)
  --api_key KEY                  require "Authorization: Bearer KEY" (default: the TUNA_API_KEY variable, else none)
  --max_batch N                  requests that generate together (default 16)
  --max_queue N                  requests that may wait for a place (default 64)
  --prefix_cache N               finished requests' KV caches kept so a prompt that continues one (the next
                                 turn of a chat) prefills only what is new (default 4; 0 = off)
  --chat_template FILE           a Jinja chat template, for models whose tokenizer has none
${SHARED_HELP.split("\n").filter((l) => MODEL_FLAGS.some((f) => l.trimStart().startsWith(`--${f} `))).join("\n")}
Sampling (temperature, top_p, max_tokens, stop, seed) comes with each request, as the OpenAI API has it.`;

const OPTIONS = {
  chat_template: SHARED_OPTIONS.chat_template,
  device: SHARED_OPTIONS.device,
  bf16: SHARED_OPTIONS.bf16,
  use_4bit_quantization: SHARED_OPTIONS.use_4bit_quantization,
  bnb_4bit_quant_type: SHARED_OPTIONS.bnb_4bit_quant_type,
  use_nested_quant: SHARED_OPTIONS.use_nested_quant,
  use_8bit_quantization: SHARED_OPTIONS.use_8bit_quantization,
  revision: SHARED_OPTIONS.revision,
  help: SHARED_OPTIONS.help,
  adapter: { type: "string", multiple: true },
  served_model_name: { type: "string" },
  host: { type: "string", default: "127.0.0.1" },
  port: { type: "string", default: "8000" },
  api_key: { type: "string" },
  max_batch: { type: "string", default: "16" },
  max_queue: { type: "string", default: "64" },
  prefix_cache: { type: "string", default: "4" },
} as const;

export interface ServeStart {
  model: string;
  adapters: { name: string; dir: string }[];
  values: SharedValues;
  servedModelName?: string;
  host: string;
  port: number;
  apiKey?: string;
  /** Requests generating together (default 16). */
  maxBatch?: number;
  /** KV caches of finished requests kept for prompts that continue them (default 4). */
  prefixCache?: number;
  maxQueue: number;
  onNotice: (message: string) => void;
}

export interface RunningServer {
  server: ReturnType<typeof createServeServer>;
  url: string;
  models: string[];
  close(): Promise<void>;
}

/** Loads the base and every adapter (an adapter that fails is reported and answered with 503) and listens. */
export async function startServe(s: ServeStart): Promise<RunningServer> {
  const problems: string[] = [];
  const shared = sharedSettings(s.values, problems);
  if (problems.length > 0) throw new TunaError("CONFIG_INVALID", `${problems.join("; ")}.`);
  const template = s.values.chat_template === undefined ? undefined : readChatTemplateFile(s.values.chat_template);
  const values: SharedValues = { ...s.values };
  Reflect.deleteProperty(values, "adapter");
  const served = (name: string, session: GenerationSession): ServedModel => ({ name, session, chatTemplate: template ?? session.tokenizer.chatTemplate });
  const base = await openGenerationSession(s.model, values, shared.device, s.onNotice);
  const baseName = s.servedModelName ?? s.model;
  const models = [served(baseName, base)];
  const failed = new Map<string, string>();
  for (const a of s.adapters) {
    try {
      const adapter = await readAdapter(a.dir, base.opened.cfg);
      const shares = adapter.embeddings === null && adapter.settings.trainableTokens === null && adapter.settings.modulesToSave === null;
      // An adapter that trained embedding rows (added chat tokens) carries its own embeddings: it loads on its own.
      models.push(served(a.name, shares ? await adapterSession(base, adapter, a.dir, values.bf16 === true ? "bf16" : "f32") : await openGenerationSession(s.model, { ...values, adapter: a.dir }, shared.device, s.onNotice)));
    } catch (e) {
      failed.set(a.name, errorMessage(e));
      s.onNotice(`warning: adapter ${a.name} (${a.dir}) failed to load and is answered with HTTP 503: ${errorMessage(e)}`);
    }
  }
  const server = createServeServer({
    models,
    failed,
    maxBatch: s.maxBatch ?? 16,
    maxQueue: s.maxQueue,
    prefixCache: s.prefixCache ?? 4,
    ...(s.apiKey === undefined ? {} : { apiKey: s.apiKey }),
    onError: (m) => {
      s.onNotice(`error: ${m}`);
    },
    onRequest: (line) => {
      s.onNotice(line);
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e) => {
      reject(new TunaError("CONFIG_INVALID", `cannot listen on ${s.host}:${s.port}: ${errorMessage(e)}; choose another --port or --host.`, { cause: e }));
    });
    server.listen(s.port, s.host, () => {
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    server,
    url: `http://${host}:${address.port}`,
    models: models.map((m) => m.name),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  };
}

/** A session over the base session's weights with `adapter` attached (its own LoRA tensors, decoder and tokenizer). */
function adapterSession(base: GenerationSession, adapter: LoraAdapter, dir: string, normsDtype: "f32" | "bf16"): Promise<GenerationSession> {
  const backend = base.decoder.model.backend;
  const params = withAdapter(backend, base.opened.params, adapter.settings, normsDtype);
  backend.upload(params.trainable.params, adapter.params.flat);
  return sessionOver(backend, { ...base.opened, params, adapter }, dir);
}

function count(raw: string, flag: string, min: number, problems: string[]): number {
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min) problems.push(`--${flag} must be an integer >= ${min}, got "${raw}"`);
  return n;
}

export async function serveCommand(args: string[], output: CliOutput): Promise<number> {
  const { values, positionals } = parseFlags(args, OPTIONS, HELP);
  if (values.help === true) {
    output.out(HELP);
    return 0;
  }
  const problems: string[] = [];
  if (positionals.length !== 1) problems.push("give exactly one model (folder or hub id)");
  const adapters = (values.adapter ?? []).map((spec) => {
    const at = spec.indexOf("=");
    if (at <= 0 || at === spec.length - 1) problems.push(`--adapter takes NAME=DIR, got "${spec}"`);
    return { name: spec.slice(0, at), dir: spec.slice(at + 1) };
  });
  const names = adapters.map((a) => a.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) problems.push(`--adapter name "${dup}" is given twice`);
  const port = count(values.port, "port", 0, problems);
  const maxQueue = count(values.max_queue, "max_queue", 0, problems);
  const maxBatch = count(values.max_batch, "max_batch", 1, problems);
  const prefixCache = count(values.prefix_cache, "prefix_cache", 0, problems);
  if (problems.length > 0) throw new TunaError("CONFIG_INVALID", `${problems.join("; ")}.\n\n${HELP}`);
  const apiKey = values.api_key ?? process.env["TUNA_API_KEY"];
  const shared: SharedValues = { ...values, adapter: undefined };
  const running = await startServe({
    model: positionals[0]!,
    adapters,
    values: shared,
    ...(values.served_model_name === undefined ? {} : { servedModelName: values.served_model_name }),
    host: values.host,
    port,
    ...(apiKey === undefined || apiKey === "" ? {} : { apiKey }),
    maxBatch,
    maxQueue,
    prefixCache,
    onNotice: (m) => {
      output.err(m);
    },
  });
  output.err(`tuna serve: listening on ${running.url} (models: ${running.models.join(", ")}${apiKey === undefined || apiKey === "" ? "" : "; API key required"}); Ctrl-C stops.`);
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      resolve();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
  await running.close();
  output.err("tuna serve: stopped.");
  return 0;
}
