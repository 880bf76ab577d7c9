// The generation loop over a KV-cache decoder: prefill the prompt (reusing a cached common prefix), then
// one token at a time until an eos id or max_new_tokens; plus HF's defaults and streamed detokenization.
import { TunaError } from "../util/errors.ts";
import type { Rng } from "../util/random.ts";
import type { GenerationConfig } from "../hf/generation-config.ts";
import { cachedPrefix, decodeForward, reserveCache, truncateCache, type Decoder } from "./causal-lm/decode.ts";
import { checkSamplingSettings, pickNextToken, type SamplingSettings } from "./sampling.ts";

export interface GenerateOptions {
  /** Stop after this many new tokens (>= 0). */
  maxNewTokens: number;
  /** Stop right after any of these is generated (it is part of the result). */
  eosTokenIds: readonly number[];
  sampling: SamplingSettings;
  /** Draws for sampling (unused when greedy). */
  rng: Rng;
  /** The model's context (max_position_embeddings): prompt plus new tokens never go past it. */
  maxPositions?: number;
  /** Called with each new token as soon as it is chosen, the final eos included. */
  onToken?: (token: number) => void;
  /**
   * Let Node's event loop run between tokens (a server: other requests, client disconnects). On the CPU a step's
   * awaits resolve at once, so without this one generation holds the loop from its first token to its last.
   */
  yieldBetweenTokens?: boolean;
}

export interface GenerateResult {
  /** The new tokens, ending with the eos token when finishReason is "eos". */
  tokens: number[];
  finishReason: "eos" | "length";
  promptTokens: number;
  /** Prompt tokens whose keys and values were already in the cache (a previous turn's prefix). */
  reusedTokens: number;
  /** Time to the first new token's logits, and for the decoding steps after it. */
  prefillMs: number;
  decodeMs: number;
  /** Decoding steps run (new tokens after the first that needed a forward of their own). */
  decodeSteps: number;
  /** Set when generation stopped (or will stop) at the model's context rather than at max_new_tokens. */
  contextLimited: boolean;
}

/**
 * Generates after `prompt` (>= 1 token). The decoder's cache is reused as far as it agrees with the
 * prompt, so a chat that re-renders its whole conversation only prefills what is new.
 */
export async function generate(decoder: Decoder, prompt: readonly number[], options: GenerateOptions): Promise<GenerateResult> {
  if (prompt.length === 0) throw new TunaError("CONFIG_INVALID", "the prompt has no tokens; give a non-empty prompt (or a tokenizer that adds a BOS token).");
  if (!Number.isSafeInteger(options.maxNewTokens) || options.maxNewTokens < 0) {
    throw new TunaError("CONFIG_INVALID", `max_new_tokens must be an integer >= 0, got ${options.maxNewTokens}.`);
  }
  checkSamplingSettings(options.sampling);
  const room = options.maxPositions === undefined ? Infinity : options.maxPositions - prompt.length;
  if (room <= 0) {
    throw new TunaError(
      "CONFIG_INVALID",
      `the prompt has ${prompt.length} tokens; the model's context (max_position_embeddings) is ${options.maxPositions}, so nothing can be generated. Shorten the prompt.`,
    );
  }
  const maxNewTokens = Math.min(options.maxNewTokens, room);
  const result: GenerateResult = {
    tokens: [],
    finishReason: "length",
    promptTokens: prompt.length,
    reusedTokens: 0,
    prefillMs: 0,
    decodeMs: 0,
    decodeSteps: 0,
    contextLimited: maxNewTokens < options.maxNewTokens,
  };
  if (maxNewTokens === 0) return result;

  // At least one prompt token must run to produce logits, even when the whole prompt is cached.
  const common = cachedPrefix(decoder, prompt);
  truncateCache(decoder, common);
  result.reusedTokens = common;
  // Room for a typical reply up front; a long one grows the cache (doubling) as it goes.
  reserveCache(decoder, prompt.length + Math.min(maxNewTokens, 512));

  const eos = new Set(options.eosTokenIds);
  // HF's repetition penalty looks at the whole sequence: prompt and generated tokens.
  const history = [...prompt];
  const started = performance.now();
  let logits = await decodeForward(decoder, prompt.slice(common));
  result.prefillMs = performance.now() - started;
  const decodeStart = performance.now();
  for (;;) {
    const next = pickNextToken(logits, history, options.sampling, options.rng);
    result.tokens.push(next);
    history.push(next);
    options.onToken?.(next);
    if (eos.has(next)) {
      result.finishReason = "eos";
      break;
    }
    if (result.tokens.length >= maxNewTokens) break;
    if (options.yieldBetweenTokens === true) {
      await new Promise<void>((resolve) => {
        setImmediate(resolve);
      });
    }
    logits = await decodeForward(decoder, [next]);
    result.decodeSteps++;
  }
  result.decodeMs = performance.now() - decodeStart;
  return result;
}

/** What the caller sets; unset fields fall back to generation_config.json, then to transformers' defaults. */
export interface GenerationOverrides {
  maxNewTokens?: number;
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  repetitionPenalty?: number;
}

export interface ResolvedGeneration {
  sampling: SamplingSettings;
  maxNewTokens: number;
  eosTokenIds: number[];
}

/** tuna's default length when neither the caller nor generation_config.json sets max_new_tokens. */
export const DEFAULT_MAX_NEW_TOKENS = 128;

/**
 * Settings as transformers derives them: caller > generation_config.json > GenerationConfig defaults
 * (temperature 1, top_k 50, top_p 1, repetition_penalty 1). Sampling is on when the caller asks for it,
 * when the caller sets a temperature > 0, or when generation_config says do_sample (a caller's
 * temperature 0 means greedy). eos: the generation config's ids (the model config's without one) plus
 * the tokenizer's eos.
 */
export function resolveGeneration(
  overrides: GenerationOverrides,
  generationConfig: GenerationConfig | undefined,
  modelEosTokenIds: readonly number[],
  tokenizerEosTokenId: number | undefined,
): ResolvedGeneration {
  const g = generationConfig;
  const t = overrides.temperature;
  const doSample = overrides.doSample === true || (t !== undefined ? t > 0 : (g?.doSample ?? false));
  const sampling: SamplingSettings = {
    doSample,
    temperature: t ?? g?.temperature ?? 1,
    topK: overrides.topK ?? g?.topK ?? 50,
    topP: overrides.topP ?? g?.topP ?? 1,
    repetitionPenalty: overrides.repetitionPenalty ?? g?.repetitionPenalty ?? 1,
  };
  checkSamplingSettings(sampling);
  const maxNewTokens = overrides.maxNewTokens ?? g?.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS;
  const eos = [...(g?.eosTokenIds ?? modelEosTokenIds)];
  if (tokenizerEosTokenId !== undefined && !eos.includes(tokenizerEosTokenId)) eos.push(tokenizerEosTokenId);
  return { sampling, maxNewTokens, eosTokenIds: eos };
}

const CJK_END = /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Hangul}]$/u;

/**
 * Streams text from tokens as transformers' TextStreamer does: re-decode everything since the last
 * newline and emit the new part up to its last space (a word may still change as tokens arrive), all of
 * it after a newline or a CJK character, nothing while it ends in an incomplete character (U+FFFD).
 */
export function createTextStream(decode: (ids: number[]) => string): { push(token: number): string; flush(): string } {
  let ids: number[] = [];
  let printed = 0;
  const emitAll = (text: string): string => {
    const delta = text.slice(printed);
    ids = [];
    printed = 0;
    return delta;
  };
  return {
    push(token) {
      ids.push(token);
      const text = decode(ids);
      if (text.endsWith("\n")) return emitAll(text);
      if (text.endsWith("\uFFFD")) return "";
      const upTo = CJK_END.test(text) ? text.length : text.lastIndexOf(" ") + 1;
      if (upTo <= printed) return "";
      const delta = text.slice(printed, upTo);
      printed = upTo;
      return delta;
    },
    flush: () => emitAll(decode(ids)),
  };
}
