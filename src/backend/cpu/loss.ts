// Token cross-entropy for the CPU backend: a stable log-softmax per row in float64 (max, then the sum of
// exp(x - max)); target -100 is ignored (loss 0, zero gradient row), any other target outside [0, V) is a bug.
import type { Tensor } from "../types.ts";
import { describe, fail } from "../checks.ts";
import { checkCrossEntropyBackward, checkCrossEntropyForward, checkSoftcap } from "../op-checks.ts";
import { expectSeparate, f32Data, i32Data, outputFloats, readFloats, writeFloats, type TensorStore } from "./store.ts";

export const IGNORE_INDEX = -100;

/** The log-sum-exp of row [base, base + vocab) of x. */
function rowLogSumExp(x: Float32Array, base: number, vocab: number): number {
  let max = -Infinity;
  for (let j = 0; j < vocab; j++) if (x[base + j]! > max) max = x[base + j]!;
  if (max === Infinity || Number.isNaN(max)) return max;
  let sum = 0;
  for (let j = 0; j < vocab; j++) sum += Math.exp(x[base + j]! - max);
  return max + Math.log(sum);
}

/** The targets i32 (N), every one checked against [0, V) or -100. */
function targetValues(store: TensorStore, op: string, targets: Tensor, vocab: number): Int32Array {
  const t = i32Data(op, "targets", store.get(op, "targets", targets));
  for (let r = 0; r < t.length; r++) {
    const target = t[r]!;
    if (target !== IGNORE_INDEX && (target < 0 || target >= vocab)) {
      fail(op, `${describe("targets", targets)} element ${r} is ${target}, outside [0, ${vocab}) and not the ignore index ${IGNORE_INDEX}`);
    }
  }
  return t;
}

/** losses f32 (N) = logsumexp(logits row) - logits[target]; 0 where the target is -100. */
export function crossEntropyForward(store: TensorStore, losses: Tensor, logits: Tensor, targets: Tensor): void {
  const op = "crossEntropyForward";
  const { rows, vocab } = checkCrossEntropyForward(losses, logits, targets);
  const t = targetValues(store, op, targets, vocab);
  const lossSlot = store.get(op, "losses", losses);
  const logitSlot = store.get(op, "logits", logits);
  expectSeparate(op, [["losses", lossSlot]], [["logits", logitSlot]]);
  const x = readFloats(logitSlot);
  const out = f32Data(op, "losses", lossSlot);
  for (let r = 0; r < rows; r++) {
    const target = t[r]!;
    out[r] = target === IGNORE_INDEX ? 0 : rowLogSumExp(x, r * vocab, vocab) - x[r * vocab + target]!;
  }
}

/**
 * dlogits (N, V) = (softmax(row) - onehot(target)) * gradScale with softmax = exp(x - max) / sum(exp(x - max));
 * zero rows for -100. dlogits may be logits itself.
 */
export function crossEntropyBackward(store: TensorStore, dlogits: Tensor, logits: Tensor, targets: Tensor, gradScale: number, softcap?: number): void {
  const op = "crossEntropyBackward";
  checkSoftcap(op, softcap);
  const { rows, vocab } = checkCrossEntropyBackward(dlogits, logits, targets, gradScale);
  const t = targetValues(store, op, targets, vocab);
  const dSlot = store.get(op, "dlogits", dlogits);
  const logitSlot = store.get(op, "logits", logits);
  // Each row is read whole (its log-sum-exp) before it is written, so writing over the logits is safe.
  expectSeparate(op, [["dlogits", dSlot]], [["logits", logitSlot]], true);
  const x = readFloats(logitSlot);
  const d = outputFloats(dSlot, false);
  const scale32 = Math.fround(gradScale);
  // exp(x - max) of one row, kept so each logit costs one exp (the exps dominate at V = 32000).
  const exps = new Float64Array(vocab);
  for (let r = 0; r < rows; r++) {
    const base = r * vocab;
    const target = t[r]!;
    if (target === IGNORE_INDEX) {
      d.fill(0, base, base + vocab);
      continue;
    }
    let max = -Infinity;
    for (let j = 0; j < vocab; j++) if (x[base + j]! > max) max = x[base + j]!;
    let sum = 0;
    for (let j = 0; j < vocab; j++) {
      const e = Math.exp(x[base + j]! - max);
      exps[j] = e;
      sum += e;
    }
    if (softcap === undefined) {
      for (let j = 0; j < vocab; j++) d[base + j] = (exps[j]! / sum - (j === target ? 1 : 0)) * scale32;
    } else {
      // Through y = cap * tanh(x / cap): dy/dx = 1 - (y / cap)^2.
      const cap = Math.fround(softcap);
      for (let j = 0; j < vocab; j++) d[base + j] = (exps[j]! / sum - (j === target ? 1 : 0)) * scale32 * (1 - (x[base + j]! / cap) ** 2);
    }
  }
  writeFloats(dSlot, d);
}
