// Cross-entropy against softmax written out in float64, the ignore index, out-of-range targets, in-place
// backward over the logits, bf16 logits, and central differences for the logits gradient.
import { test } from "node:test";
import assert from "node:assert/strict";
import { f32ToBf16Bits } from "../../../src/util/half.ts";
import { assertInternal, assertUlps, backend, checkGradient, intsOf, project, randn, randnBf16, rng, tensorOf } from "./helpers.ts";

const be = backend();
const r = rng(61);

/** -log(softmax(row)[target]) with softmax = exp(x) / sum(exp(x)), shifted by the row max to stay finite. */
function naiveLosses(x: Float32Array, targets: readonly number[], vocab: number): Float64Array {
  return Float64Array.from(targets, (t, i) => {
    if (t === -100) return 0;
    const row = Array.from(x.subarray(i * vocab, (i + 1) * vocab));
    const max = Math.max(...row);
    const sum = row.reduce((s, v) => s + Math.exp(v - max), 0);
    return -Math.log(Math.exp(row[t]! - max) / sum);
  });
}

void test("crossEntropyForward gives -log softmax at the target, 0 for -100, and stays finite for huge logits", async () => {
  const vocab = 11;
  const targets = [3, -100, 0, 10, 7];
  const xv = randn(r, targets.length * vocab, 4);
  xv[4 * vocab + 2] = 1e30; // one enormous logit: the stable form must not overflow
  const losses = be.alloc("f32", [targets.length]);
  be.crossEntropyForward(losses, tensorOf(be, [targets.length, vocab], xv), intsOf(be, targets));
  const got = await be.downloadF32(losses);
  assertUlps(got, naiveLosses(xv, targets, vocab), 1, "losses");
  assert.equal(got[1], 0);
  assert.equal(got[4], Math.fround(xv[4 * vocab + 2]! - xv[4 * vocab + 7]!));
});

void test("crossEntropyBackward is (softmax - onehot) * gradScale with zero rows for -100, also written over the logits", async () => {
  const vocab = 6;
  const targets = [2, -100, 5];
  const xv = randn(r, targets.length * vocab, 2);
  const expected = new Float64Array(xv.length);
  targets.forEach((t, i) => {
    if (t === -100) return;
    const row = xv.subarray(i * vocab, (i + 1) * vocab);
    const sum = row.reduce((s, v) => s + Math.exp(v), 0);
    for (let j = 0; j < vocab; j++) expected[i * vocab + j] = (Math.exp(row[j]!) / sum - (j === t ? 1 : 0)) * 0.25;
  });
  const logits = tensorOf(be, [targets.length, vocab], xv);
  const d = be.alloc("f32", [targets.length, vocab]);
  be.crossEntropyBackward(d, logits, intsOf(be, targets), 0.25);
  assertUlps(await be.downloadF32(d), expected, 2, "dlogits");
  be.crossEntropyBackward(logits, logits, intsOf(be, targets), 0.25);
  assert.deepEqual(await be.downloadF32(logits), await be.downloadF32(d));
});

void test("crossEntropyBackward matches central differences of the summed losses", async () => {
  const vocab = 5;
  const targets = [1, 4, -100, 0];
  const xv = randn(r, targets.length * vocab);
  const R = randn(r, targets.length);
  // d(sum_i R_i loss_i)/dlogits: the backward per row with gradScale R_i.
  const analytic = new Float32Array(xv.length);
  for (let i = 0; i < targets.length; i++) {
    const d = be.alloc("f32", [1, vocab]);
    be.crossEntropyBackward(d, tensorOf(be, [1, vocab], xv.slice(i * vocab, (i + 1) * vocab)), intsOf(be, [targets[i]!]), R[i]!);
    analytic.set(await be.downloadF32(d), i * vocab);
  }
  const ids = intsOf(be, targets);
  await checkGradient("logits", xv, analytic, async (x) => {
    const losses = be.alloc("f32", [targets.length]);
    be.crossEntropyForward(losses, tensorOf(be, [targets.length, vocab], x), ids);
    return project(await be.downloadF32(losses), R);
  });
});

void test("cross-entropy on bf16 logits equals the f32 op on the same values; bf16 dlogits are its rounding", async () => {
  const vocab = 9;
  const targets = [0, 8, 4];
  const xv = randnBf16(r, targets.length * vocab, 3);
  const ids = intsOf(be, targets);
  const l32 = be.alloc("f32", [3]);
  const l16 = be.alloc("f32", [3]);
  be.crossEntropyForward(l32, tensorOf(be, [3, vocab], xv), ids);
  be.crossEntropyForward(l16, tensorOf(be, [3, vocab], xv, "bf16"), ids);
  assert.deepEqual(await be.downloadF32(l16), await be.downloadF32(l32));
  const d32 = be.alloc("f32", [3, vocab]);
  const d16 = be.alloc("bf16", [3, vocab]);
  be.crossEntropyBackward(d32, tensorOf(be, [3, vocab], xv), ids, 1);
  be.crossEntropyBackward(d16, tensorOf(be, [3, vocab], xv, "bf16"), ids, 1);
  assert.deepEqual(await be.download(d16), Uint16Array.from(await be.downloadF32(d32), (v) => f32ToBf16Bits(v)));
});

void test("cross-entropy rejects targets outside [0, V) other than -100", () => {
  const logits = be.alloc("f32", [2, 4]);
  const losses = be.alloc("f32", [2]);
  assertInternal(() => { be.crossEntropyForward(losses, logits, intsOf(be, [0, 4])); }, "element 1 is 4, outside [0, 4)");
  assertInternal(() => { be.crossEntropyBackward(logits, logits, intsOf(be, [-1, 0]), 1); }, "element 0 is -1");
  assertInternal(() => { be.crossEntropyForward(losses, logits, intsOf(be, [0, 1, 2])); }, "targets shape [3] does not match [2]");
  assertInternal(() => { be.crossEntropyForward(be.alloc("bf16", [2]), logits, intsOf(be, [0, 1])); }, "losses dtype bf16 is not f32");
});
