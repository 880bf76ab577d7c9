// Choosing the next token from logits as transformers' generate does: repetition penalty, then (when
// sampling) temperature, top-k and top-p, then a seeded draw; greedy takes the argmax after the penalty.
import { TunaError } from "../util/errors.ts";
import type { Rng } from "../util/random.ts";

export interface SamplingSettings {
  /** false: greedy (argmax of the penalized logits); true: draw from the filtered distribution. */
  doSample: boolean;
  /** Logits are divided by it when sampling (> 0); 1 leaves them as they are. */
  temperature: number;
  /** Keep the k most likely tokens (ties with the k-th kept); 0 disables. */
  topK: number;
  /** Keep the smallest most-likely set whose probability reaches top_p (at least one token); 1 disables. */
  topP: number;
  /** HF's RepetitionPenaltyLogitsProcessor over the prompt and generated tokens; 1 disables. */
  repetitionPenalty: number;
}

export const GREEDY: SamplingSettings = { doSample: false, temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1 };

/** Throws CONFIG_INVALID naming every field outside its range (names as in generation_config.json). */
export function checkSamplingSettings(s: SamplingSettings): void {
  const problems: string[] = [];
  if (s.doSample && !(s.temperature > 0 && Number.isFinite(s.temperature))) problems.push(`temperature must be > 0 when sampling, got ${s.temperature}`);
  if (!Number.isSafeInteger(s.topK) || s.topK < 0) problems.push(`top_k must be an integer >= 0 (0 = off), got ${s.topK}`);
  if (!(s.topP > 0 && s.topP <= 1)) problems.push(`top_p must be in (0, 1], got ${s.topP}`);
  if (!(s.repetitionPenalty > 0 && Number.isFinite(s.repetitionPenalty))) problems.push(`repetition_penalty must be > 0, got ${s.repetitionPenalty}`);
  if (problems.length > 0) throw new TunaError("CONFIG_INVALID", `invalid sampling settings: ${problems.join("; ")}.`);
}

/**
 * In place, once per distinct token of `previous`: a negative score is multiplied by the penalty, any
 * other divided by it (HF RepetitionPenaltyLogitsProcessor), so penalty > 1 always makes the token less likely.
 */
export function applyRepetitionPenalty(scores: Float64Array, previous: Iterable<number>, penalty: number): void {
  if (penalty === 1) return;
  for (const id of new Set(previous)) {
    const s = scores[id];
    if (s === undefined) continue;
    scores[id] = s < 0 ? s * penalty : s / penalty;
  }
}

/** In place: scores / temperature. */
export function applyTemperature(scores: Float64Array, temperature: number): void {
  if (temperature === 1) return;
  for (let i = 0; i < scores.length; i++) scores[i] = scores[i]! / temperature;
}

/** In place: every score below the k-th largest becomes -Infinity (HF TopKLogitsWarper; ties with it stay). */
export function topKFilter(scores: Float64Array, k: number): void {
  if (k <= 0 || k >= scores.length) return;
  const kth = kthLargest(scores, k);
  for (let i = 0; i < scores.length; i++) if (scores[i]! < kth) scores[i] = -Infinity;
}

/** The k-th largest value, with a size-k min-heap: O(V log k), no sort of the whole vocabulary. */
function kthLargest(values: Float64Array, k: number): number {
  const heap = new Float64Array(k);
  heap.set(values.subarray(0, k));
  const siftDown = (start: number): void => {
    let i = start;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let min = i;
      if (l < k && heap[l]! < heap[min]!) min = l;
      if (r < k && heap[r]! < heap[min]!) min = r;
      if (min === i) return;
      const t = heap[i]!;
      heap[i] = heap[min]!;
      heap[min] = t;
      i = min;
    }
  };
  for (let i = (k >> 1) - 1; i >= 0; i--) siftDown(i);
  for (let i = k; i < values.length; i++) {
    const v = values[i]!;
    if (v > heap[0]!) {
      heap[0] = v;
      siftDown(0);
    }
  }
  return heap[0]!;
}

/**
 * In place, HF TopPLogitsWarper: sort ascending, cumulate the softmax, drop tokens whose cumulative
 * probability is <= 1 - top_p, never the most likely one. What is left is the smallest most-likely set
 * whose probability reaches top_p.
 */
export function topPFilter(scores: Float64Array, topP: number): void {
  if (topP >= 1) return;
  const probs = softmax(scores);
  // Ascending by score; equal scores in index order (torch's sort leaves their order unspecified).
  // Tokens already at -Infinity (top-k) have probability 0 and stay removed, so only the rest are sorted.
  const order: number[] = [];
  scores.forEach((s, i) => {
    if (s !== -Infinity) order.push(i);
  });
  order.sort((a, b) => scores[a]! - scores[b]! || a - b);
  let cumulative = 0;
  for (let r = 0; r + 1 < order.length; r++) {
    const i = order[r]!;
    cumulative += probs[i]!;
    if (cumulative <= 1 - topP) scores[i] = -Infinity;
    else break;
  }
}

/** softmax in float64; -Infinity scores get probability 0. */
export function softmax(scores: Float64Array): Float64Array {
  let max = -Infinity;
  for (const s of scores) if (s > max) max = s;
  const out = new Float64Array(scores.length);
  if (max === -Infinity) throw new TunaError("INTERNAL", "softmax: every score is -Infinity");
  let sum = 0;
  for (let i = 0; i < scores.length; i++) {
    const e = Math.exp(scores[i]! - max);
    out[i] = e;
    sum += e;
  }
  for (let i = 0; i < out.length; i++) out[i] = out[i]! / sum;
  return out;
}

/** Index of the largest score, the first one on ties (torch.argmax). */
export function argmax(scores: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < scores.length; i++) if (scores[i]! > scores[best]!) best = i;
  return best;
}

/** One draw from a probability vector (inverse CDF of one uniform). */
export function sampleIndex(probs: Float64Array, rng: Rng): number {
  const u = rng.uniform();
  let total = 0;
  for (const p of probs) total += p;
  let cumulative = 0;
  let lastPositive = -1;
  for (let i = 0; i < probs.length; i++) {
    const p = probs[i]!;
    if (p <= 0) continue;
    lastPositive = i;
    cumulative += p;
    if (u * total < cumulative) return i;
  }
  // Rounding left u * total at the very top: the last token that had any probability.
  if (lastPositive < 0) throw new TunaError("INTERNAL", "sampleIndex: no token has a positive probability");
  return lastPositive;
}

/** The scores after the repetition penalty and, when sampling, temperature, top-k and top-p (HF's order). */
export function processLogits(logits: ArrayLike<number>, previous: readonly number[], s: SamplingSettings): Float64Array {
  // Typed arrays convert natively; a plain array (tests, callers) element by element.
  const scores = logits instanceof Float32Array || logits instanceof Float64Array ? new Float64Array(logits) : Float64Array.from(Array.from(logits));
  applyRepetitionPenalty(scores, previous, s.repetitionPenalty);
  if (!s.doSample) return scores;
  applyTemperature(scores, s.temperature);
  topKFilter(scores, s.topK);
  topPFilter(scores, s.topP);
  return scores;
}

/** The distribution the next token is drawn from (sampling), over the whole vocabulary. */
export function nextTokenDistribution(logits: ArrayLike<number>, previous: readonly number[], s: SamplingSettings): Float64Array {
  return softmax(processLogits(logits, previous, s));
}

/** The next token: argmax when greedy, else one draw from nextTokenDistribution with `rng`. */
export function pickNextToken(logits: ArrayLike<number>, previous: readonly number[], s: SamplingSettings, rng: Rng): number {
  const scores = processLogits(logits, previous, s);
  return s.doSample ? sampleIndex(softmax(scores), rng) : argmax(scores);
}
