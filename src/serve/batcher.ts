// Continuous batching for `tuna serve`: up to maxBatch requests generate together, each with its own KV cache.
// A request joins as soon as a slot frees (its prompt is prefilled on its own), then every step runs the next
// token of all running requests as one batch over the base (decodeBatch: requests for different adapters share
// the base's GEMMs, each adapter adds its own B A to its rows); a request leaves at eos, max_tokens, a stop
// sequence, or when its client goes away. Beyond the running ones, maxQueue requests wait; more get 429.
// Node's event loop runs between steps, so HTTP traffic is served while generating. Finished requests leave
// their KV caches in a small prefix cache: a request whose prompt starts with one of them (the next turn of a
// chat resends the conversation) prefills only what is new.
import { TunaError, errorMessage } from "../util/errors.ts";
import { createRng, type Rng } from "../util/random.ts";
import { cachedPrefix, createDecoder, decodeForward, freeDecoder, reserveCache, truncateCache, type Decoder } from "../model/causal-lm/decode.ts";
import { batchable, decodeBatch } from "../model/causal-lm/decode-batch.ts";
import type { CausalLm } from "../model/causal-lm/model.ts";
import { createTextStream } from "../model/generate.ts";
import { pickNextToken } from "../model/sampling.ts";
import { HttpError, type GenerationRequest } from "./requests.ts";
import { planRequest, type PlannedRequest, type RunResult, type ServedModel } from "./run-request.ts";
import { createStopText } from "./stop-text.ts";

export interface Batcher {
  /** Generates `req` on `model`, handing out text as it is decoded; rejects with HttpError 429 when full. */
  submit(model: ServedModel, req: GenerationRequest, onText: (text: string) => void, aborted: () => boolean): Promise<RunResult>;
  readonly running: number;
  readonly waiting: number;
  /** Steps run and the rows they decoded, and prompt tokens the prefix cache spared, for logs and tests. */
  readonly stats: { steps: number; rows: number; largestBatch: number; reusedTokens: number };
}

interface Job {
  model: ServedModel;
  req: GenerationRequest;
  onText: (text: string) => void;
  aborted: () => boolean;
  resolve: (r: RunResult) => void;
  reject: (e: unknown) => void;
}

interface Running {
  job: Job;
  plan: PlannedRequest;
  decoder: Decoder;
  history: number[];
  rng: Rng;
  eos: Set<number>;
  stream: ReturnType<typeof createTextStream>;
  stops: ReturnType<typeof createStopText>;
  text: string;
  completionTokens: number;
  /** The token to run next (chosen, not yet in the cache). */
  next: number;
}

/** A finished request's KV cache, kept for a later prompt that starts the same way. */
interface CachedPrefix {
  model: string;
  decoder: Decoder;
}

export function createBatcher(options: {
  base: CausalLm;
  maxBatch: number;
  maxQueue: number;
  /** Finished requests' KV caches kept for prompts that continue them (0 = none). */
  prefixCache?: number;
  onError?: (message: string) => void;
}): Batcher {
  if (!Number.isSafeInteger(options.maxBatch) || options.maxBatch < 1) throw new TunaError("CONFIG_INVALID", `max_batch must be an integer >= 1, got ${options.maxBatch}`);
  const pending: Job[] = [];
  const running: Running[] = [];
  const stats = { steps: 0, rows: 0, largestBatch: 0, reusedTokens: 0 };
  let looping = false;
  const prefixCapacity = options.prefixCache ?? 0;
  const cached: CachedPrefix[] = []; // least recently used first

  /** Keeps r's KV cache for a later prompt (the oldest kept one is freed beyond the capacity). */
  const release = (r: Running): void => {
    if (prefixCapacity === 0) {
      freeDecoder(r.decoder);
      return;
    }
    cached.push({ model: r.job.model.name, decoder: r.decoder });
    while (cached.length > prefixCapacity) freeDecoder(cached.shift()!.decoder);
  };
  /** The kept KV cache that shares the longest start with `prompt` on `model` (leaving one token to run), taken out of the cache. */
  const takePrefix = (model: string, prompt: readonly number[]): { decoder: Decoder; common: number } | null => {
    let index = -1;
    let common = 0;
    for (const [i, c] of cached.entries()) {
      if (c.model !== model) continue;
      const n = cachedPrefix(c.decoder, prompt);
      if (n > common) {
        index = i;
        common = n;
      }
    }
    if (index < 0) return null;
    const decoder = cached.splice(index, 1)[0]!.decoder;
    truncateCache(decoder, common);
    return { decoder, common };
  };

  const emit = (r: Running, piece: string): void => {
    if (piece.length === 0) return;
    r.text += piece;
    r.job.onText(piece);
  };
  /** Ends r: at eos or max_tokens the text held back (a partial character, a possible stop prefix) is flushed. */
  const finish = (r: Running, how: "eos" | "length" | "stop sequence" | "client gone"): void => {
    running.splice(running.indexOf(r), 1);
    release(r);
    let finishReason: RunResult["finishReason"] = how === "eos" || how === "stop sequence" ? "stop" : "length";
    if (how === "eos" || how === "length") {
      const rest = r.stops.push(r.stream.flush());
      emit(r, rest.emit);
      if (rest.stopped) finishReason = "stop";
      else emit(r, r.stops.flush());
    }
    r.job.resolve({ text: r.text, finishReason, promptTokens: r.plan.prompt.length, completionTokens: r.completionTokens });
  };
  /** Takes the logits of r's last token: picks the next one and ends r when it is done. */
  const advance = (r: Running, logits: Float32Array): void => {
    if (r.job.aborted()) {
      finish(r, "client gone");
      return;
    }
    const token = pickNextToken(logits, r.history, r.plan.sampling, r.rng);
    r.history.push(token);
    if (r.eos.has(token)) {
      finish(r, "eos");
      return;
    }
    r.completionTokens++;
    const out = r.stops.push(r.stream.push(token));
    emit(r, out.emit);
    if (out.stopped) finish(r, "stop sequence");
    else if (r.completionTokens >= r.plan.maxTokens) finish(r, "length");
    else r.next = token;
  };
  const admit = async (job: Job): Promise<void> => {
    let plan: PlannedRequest;
    try {
      plan = planRequest(job.model, job.req);
    } catch (e) {
      job.reject(e);
      return;
    }
    if (plan.maxTokens === 0 || job.aborted()) {
      job.resolve({ text: "", finishReason: "length", promptTokens: plan.prompt.length, completionTokens: 0 });
      return;
    }
    const tokenizer = job.model.session.tokenizer;
    const reused = takePrefix(job.model.name, plan.prompt);
    const room = plan.prompt.length + Math.min(plan.maxTokens, 512);
    const decoder = reused?.decoder ?? createDecoder(job.model.session.decoder.model, room);
    if (reused !== null) {
      reserveCache(decoder, room);
      stats.reusedTokens += reused.common;
    }
    const r: Running = {
      job,
      plan,
      decoder,
      history: [...plan.prompt],
      rng: createRng(job.req.seed),
      eos: new Set(plan.eosTokenIds),
      stream: createTextStream((ids) => tokenizer.decode(ids, { skipSpecialTokens: true })),
      stops: createStopText(job.req.stop),
      text: "",
      completionTokens: 0,
      next: -1,
    };
    running.push(r);
    advance(r, await decodeForward(decoder, plan.prompt.slice(reused?.common ?? 0)));
  };
  /** One token for every running request: batchable ones together (grouped by model), the others alone. */
  const step = async (): Promise<void> => {
    const rows = running.filter((r) => !r.job.aborted());
    for (const r of running.filter((x) => x.job.aborted())) finish(r, "client gone");
    if (rows.length === 0) return;
    const together = rows.filter((r) => batchable(r.decoder, options.base)).sort((a, b) => (a.job.model.name < b.job.model.name ? -1 : a.job.model.name > b.job.model.name ? 1 : 0));
    const alone = rows.filter((r) => !together.includes(r));
    stats.steps++;
    stats.rows += rows.length;
    stats.largestBatch = Math.max(stats.largestBatch, together.length);
    const logits = await decodeBatch(
      options.base,
      together.map((r) => ({ decoder: r.decoder, token: r.next })),
    );
    const results: [Running, Float32Array][] = together.map((r, i) => [r, logits[i]!]);
    for (const r of alone) results.push([r, await decodeForward(r.decoder, [r.next])]);
    for (const [r, l] of results) advance(r, l);
  };
  const loop = async (): Promise<void> => {
    if (looping) return;
    looping = true;
    try {
      while (pending.length > 0 || running.length > 0) {
        while (running.length < options.maxBatch && pending.length > 0) {
          const job = pending.shift()!;
          await admit(job).catch((e: unknown) => {
            job.reject(e);
          });
        }
        await step();
        await new Promise<void>((resolve) => {
          setImmediate(resolve);
        });
      }
    } catch (e) {
      // A failure of the model itself: every request in flight gets it, and the server goes on.
      options.onError?.(`generation failed: ${errorMessage(e)}`);
      for (const r of running.splice(0)) {
        freeDecoder(r.decoder);
        r.job.reject(e);
      }
    } finally {
      looping = false;
      if (pending.length > 0) void loop();
    }
  };
  return {
    get running() {
      return running.length;
    },
    get waiting() {
      return pending.length;
    },
    stats,
    submit(model, req, onText, aborted) {
      if (running.length + pending.length >= options.maxBatch + options.maxQueue) {
        return Promise.reject(
          new HttpError(
            429,
            `the server is busy: ${running.length} request(s) are generating (--max_batch ${options.maxBatch}) and ${pending.length} are waiting (--max_queue ${options.maxQueue}); retry later`,
            "rate_limit_error",
            "queue_full",
          ),
        );
      }
      return new Promise<RunResult>((resolve, reject) => {
        pending.push({ model, req, onText, aborted, resolve, reject });
        void loop();
      });
    },
  };
}
