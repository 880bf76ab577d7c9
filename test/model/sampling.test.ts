// Next-token selection on hand-made distributions: greedy argmax, HF's repetition penalty, temperature,
// top-k (ties kept) and top-p kept sets, empirical frequencies of seeded draws, and determinism per seed.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  GREEDY,
  applyRepetitionPenalty,
  checkSamplingSettings,
  nextTokenDistribution,
  pickNextToken,
  topKFilter,
  topPFilter,
  type SamplingSettings,
} from "../../src/model/sampling.ts";
import { createRng } from "../../src/util/random.ts";
import { isTunaError } from "../../src/util/errors.ts";

const SAMPLE: SamplingSettings = { doSample: true, temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1 };

/** Logits whose softmax is exactly `probs` (log-probabilities). */
function logitsOf(probs: readonly number[]): Float32Array {
  return Float32Array.from(probs, (p) => Math.log(p));
}

/** Indices whose score is still finite after a filter. */
function kept(scores: Float64Array): number[] {
  const out: number[] = [];
  scores.forEach((s, i) => {
    if (s !== -Infinity) out.push(i);
  });
  return out;
}

void test("greedy picks the argmax (the first on ties) and draws nothing from the rng", () => {
  const rng = createRng(1);
  const before = rng.state();
  assert.equal(pickNextToken([0.1, 2.5, -1, 2.4], [], GREEDY, rng), 1);
  assert.equal(pickNextToken([3, 1, 3], [], GREEDY, rng), 0);
  assert.equal(pickNextToken([-5, -2, -9], [], GREEDY, rng), 1);
  assert.deepEqual(rng.state(), before);
});

void test("repetition penalty as HF: positive scores divided, negative multiplied, once per distinct token", () => {
  const scores = Float64Array.from([2, -2, 1, 0.5, 0]);
  applyRepetitionPenalty(scores, [0, 1, 1, 4, 1], 2);
  assert.deepEqual(Array.from(scores), [1, -4, 1, 0.5, 0]);
  // Below 1 it rewards repetition the same way round.
  const reward = Float64Array.from([2, -2]);
  applyRepetitionPenalty(reward, [0, 1], 0.5);
  assert.deepEqual(Array.from(reward), [4, -1]);
  // Greedy sees the penalty: token 0 (3.0 -> 1.5) loses to token 2 (2.0).
  const settings = { ...GREEDY, repetitionPenalty: 2 };
  assert.equal(pickNextToken([3, 0, 2], [], settings, createRng(0)), 0);
  assert.equal(pickNextToken([3, 0, 2], [7, 0], settings, createRng(0)), 2);
});

void test("top-k keeps the k largest scores and every score tied with the k-th", () => {
  const cases: [number[], number, number[]][] = [
    [[1, 3, 3, 2, 0], 2, [1, 2]],
    [[1, 3, 3, 2, 0], 3, [1, 2, 3]],
    [[1, 3, 2, 2, 0], 2, [1, 2, 3]],
    [[1, 3, 2, 2, 0], 1, [1]],
    [[1, 3, 2, 2, 0], 0, [0, 1, 2, 3, 4]],
    [[1, 3, 2, 2, 0], 9, [0, 1, 2, 3, 4]],
  ];
  for (const [scores, k, expected] of cases) {
    const s = Float64Array.from(scores);
    topKFilter(s, k);
    assert.deepEqual(kept(s), expected, `top_k ${k} of ${JSON.stringify(scores)}`);
  }
});

void test("top-p keeps the smallest most-likely set whose probability reaches top_p, at least one token", () => {
  // Probabilities 0.5, 0.3, 0.15, 0.05 placed out of order.
  const probs = [0.15, 0.5, 0.05, 0.3];
  const cases: [number, number[]][] = [
    [0.4, [1]], // 0.5 alone reaches 0.4
    [0.75, [1, 3]], // 0.5 + 0.3 = 0.8
    [0.85, [0, 1, 3]], // 0.8 < 0.85, adding 0.15 gives 0.95
    [0.99, [0, 1, 2, 3]],
    [1e-6, [1]],
    [1, [0, 1, 2, 3]],
  ];
  for (const [topP, expected] of cases) {
    const s = Float64Array.from(logitsOf(probs));
    topPFilter(s, topP);
    assert.deepEqual(kept(s), expected, `top_p ${topP}`);
  }
});

void test("temperature reshapes the distribution: T = 0.5 squares the probabilities, T = 2 takes their square root", () => {
  const p = [0.6, 0.3, 0.1];
  const normalize = (xs: number[]): number[] => xs.map((x) => x / xs.reduce((a, b) => a + b, 0));
  const check = (temperature: number, expected: number[]): void => {
    const d = nextTokenDistribution(logitsOf(p), [], { ...SAMPLE, temperature });
    expected.forEach((e, i) => {
      assert.ok(Math.abs(d[i]! - e) < 1e-6, `T=${temperature}: p[${i}] = ${d[i]} vs ${e}`);
    });
  };
  check(0.5, normalize(p.map((x) => x * x)));
  check(2, normalize(p.map(Math.sqrt)));
  check(1, p);
});

void test("filters compose in HF's order: temperature, then top-k, then top-p on the renormalized rest", () => {
  // T = 0.5 turns 0.4/0.3/0.2/0.1 into 16/9/4/1 over 30; top-k 3 drops the last: 16/9/4 over 29 =
  // 0.552, 0.310, 0.138; top-p 0.8 then keeps the first two (0.552 < 0.8 <= 0.862).
  const d = nextTokenDistribution(logitsOf([0.4, 0.3, 0.2, 0.1]), [], { ...SAMPLE, temperature: 0.5, topK: 3, topP: 0.8 });
  // The logits are float32 logarithms: about 1e-8 of rounding.
  assert.ok(Math.abs(d[0]! - 16 / 25) < 1e-7 && Math.abs(d[1]! - 9 / 25) < 1e-7, Array.from(d).join(", "));
  assert.equal(d[2], 0);
  assert.equal(d[3], 0);
});

void test("seeded draws follow the distribution and repeat exactly with the same seed", () => {
  const p = [0.5, 0.25, 0.15, 0.1];
  const logits = logitsOf(p);
  const draws = (seed: number, n: number): number[] => {
    const rng = createRng(seed);
    return Array.from({ length: n }, () => pickNextToken(logits, [], SAMPLE, rng));
  };
  const n = 40000;
  const counts = [0, 0, 0, 0];
  for (const t of draws(7, n)) counts[t]!++;
  // Binomial standard deviation is at most sqrt(0.25 / n) = 0.0025; allow 4 of them.
  p.forEach((expected, i) => {
    assert.ok(Math.abs(counts[i]! / n - expected) < 0.01, `token ${i}: ${counts[i]! / n} vs ${expected}`);
  });
  assert.deepEqual(draws(3, 200), draws(3, 200));
  assert.notDeepEqual(draws(3, 200), draws(4, 200));
  // A filtered-out token is never drawn.
  const rng = createRng(11);
  for (let i = 0; i < 2000; i++) assert.notEqual(pickNextToken(logits, [], { ...SAMPLE, topK: 3 }, rng), 3);
});

void test("invalid settings are reported together with their generation_config names", () => {
  assert.throws(
    () => {
      checkSamplingSettings({ doSample: true, temperature: 0, topK: -1, topP: 1.5, repetitionPenalty: 0 });
    },
    (e: unknown) => isTunaError(e) && e.code === "CONFIG_INVALID" && ["temperature", "top_k", "top_p", "repetition_penalty"].every((f) => e.message.includes(f)),
  );
  // temperature 0 is fine when greedy (it is not used).
  checkSamplingSettings({ ...GREEDY, temperature: 0 });
});
