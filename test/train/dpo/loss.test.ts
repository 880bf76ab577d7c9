// The DPO pair losses: values against the formulas written out here independently (TRL's dpo_loss, from its
// source as remembered), and the derivatives against central differences, for every loss type, with and
// without label smoothing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { dpoLosses, dpoPairLoss, logSigmoid, type DpoLossType, type PairLogps } from "../../../src/train/dpo/loss.ts";

const softplus = (x: number): number => Math.log(1 + Math.exp(x));
const sig = (x: number): number => 1 / (1 + Math.exp(-x));
const logsig = (x: number): number => -softplus(-x);
/** TRL's formulas, literally (softplus(-x) = -log sigmoid(x)). */
function reference(type: Exclude<DpoLossType, "aot" | "aot_pair" | "aot_unpaired">, beta: number, ls: number, p: PairLogps): number {
  const logits = p.chosen - p.rejected - (p.refChosen - p.refRejected);
  const chosenLogratios = p.chosen - p.refChosen;
  const rejectedLogratios = p.rejected - p.refRejected;
  switch (type) {
    case "exo_pair": {
      const e = ls === 0 ? 1e-3 : ls;
      return sig(beta * logits) * (logsig(beta * logits) - Math.log(1 - e)) + sig(-beta * logits) * (logsig(-beta * logits) - Math.log(e));
    }
    case "nca_pair": {
      const chosenRewards = chosenLogratios * beta;
      const rejectedRewards = rejectedLogratios * beta;
      return -logsig(chosenRewards) - 0.5 * logsig(-chosenRewards) - 0.5 * logsig(-rejectedRewards);
    }
    case "sppo_hard":
      return (chosenLogratios - 0.5 / beta) ** 2 + (rejectedLogratios + 0.5 / beta) ** 2;
    case "bco_pair": // TRL 1.13: -logsigmoid(chosen_rewards) - logsigmoid(-rejected_rewards)
      return -logsig(beta * chosenLogratios) - logsig(-beta * rejectedLogratios);
    case "sigmoid_norm": // the sigmoid loss; the per-token averaging happens in the objective
      return softplus(-beta * logits) * (1 - ls) + softplus(beta * logits) * ls;
    case "apo_zero":
      return 1 - sig(beta * chosenLogratios) + sig(beta * rejectedLogratios);
    case "apo_down":
      return sig(beta * chosenLogratios) + (1 - sig(beta * (chosenLogratios - rejectedLogratios)));
    case "discopop": {
      const l = logits * beta;
      const modulation = sig(l / 0.05);
      return -logsig(l) * (1 - modulation) + Math.exp(-l) * modulation;
    }
    case "sigmoid":
      return softplus(-beta * logits) * (1 - ls) + softplus(beta * logits) * ls;
    case "robust":
      return (softplus(-beta * logits) * (1 - ls) - softplus(beta * logits) * ls) / (1 - 2 * ls);
    case "hinge":
      return Math.max(0, 1 - beta * logits);
    case "ipo":
      return (logits - 1 / (2 * beta)) ** 2;
  }
}

const PAIRS: PairLogps[] = [
  { chosen: -12.5, rejected: -14.25, refChosen: -13, refRejected: -13.5 },
  { chosen: -40, rejected: -22, refChosen: -39.5, refRejected: -23 },
  { chosen: -3.2, rejected: -3.2, refChosen: 0, refRejected: 0 },
];

for (const type of ["sigmoid", "robust", "hinge", "ipo", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "apo_zero", "apo_down", "discopop", "sigmoid_norm"] as const) {
  for (const ls of type === "sigmoid" || type === "robust" || type === "exo_pair" ? [0, 0.1] : [0]) {
    void test(`${type} (label_smoothing ${ls}): loss as TRL computes it, derivatives by central differences, rewards`, () => {
      for (const beta of [0.1, 0.5]) {
        for (const p of PAIRS) {
          const s = { lossType: type, beta, labelSmoothing: ls };
          const r = dpoPairLoss(p, s);
          const want = reference(type, beta, ls, p);
          assert.ok(Math.abs(r.loss - want) <= 1e-11 * Math.max(1, Math.abs(want)), `${type} ${beta} ${JSON.stringify(p)}: ${r.loss} vs ${want}`);
          const h = 1e-6;
          const num = (k: "chosen" | "rejected"): number => (dpoPairLoss({ ...p, [k]: p[k] + h }, s).loss - dpoPairLoss({ ...p, [k]: p[k] - h }, s).loss) / (2 * h);
          // hinge has a kink at beta z = 1; none of these pairs sits on it.
          const close = (x: number, y: number): boolean => Math.abs(x - y) < 1e-6 * Math.max(1, Math.abs(y));
          assert.ok(close(r.dChosen, num("chosen")), `${type}: d chosen ${r.dChosen} vs ${num("chosen")}`);
          assert.ok(close(r.dRejected, num("rejected")), `${type}: d rejected ${r.dRejected} vs ${num("rejected")}`);
          assert.equal(r.chosenReward, beta * (p.chosen - p.refChosen));
          assert.equal(r.rejectedReward, beta * (p.rejected - p.refRejected));
        }
      }
    });
  }
}

void test("log sigmoid stays finite far out in both directions", () => {
  assert.equal(logSigmoid(800), -0);
  assert.ok(Math.abs(logSigmoid(-800) + 800) < 1e-9);
  assert.ok(Math.abs(logSigmoid(0) - Math.log(0.5)) < 1e-15);
});

/** TRL's AOT losses, literally: sort two lists over the batch, pair the i-th of each. */
function aotReference(type: "aot" | "aot_pair" | "aot_unpaired", beta: number, ls: number, pairs: PairLogps[]): number {
  const unpaired = type !== "aot";
  const first = pairs.map((p) => (unpaired ? p.chosen - p.refChosen : p.chosen - p.rejected)).sort((x, y) => x - y);
  const second = pairs.map((p) => (unpaired ? p.rejected - p.refRejected : p.refChosen - p.refRejected)).sort((x, y) => x - y);
  let sum = 0;
  first.forEach((x, i) => {
    const delta = x - second[i]!;
    sum += -logsig(beta * delta) * (1 - ls) - logsig(-beta * delta) * ls;
  });
  return sum;
}

for (const type of ["aot", "aot_pair", "aot_unpaired"] as const) {
  void test(`${type}: the micro-batch's loss as TRL computes it (sorted lists paired), each pair's derivatives by central differences`, () => {
    const batch: PairLogps[] = [...PAIRS, { chosen: -7, rejected: -9.5, refChosen: -8, refRejected: -8.25 }, { chosen: -20, rejected: -18, refChosen: -19, refRejected: -19.5 }];
    for (const ls of [0, 0.1]) {
      const s = { lossType: type, beta: 0.3, labelSmoothing: ls };
      const total = (b: PairLogps[]): number => dpoLosses(b, s).reduce((n, r) => n + r.loss, 0);
      const want = aotReference(type, 0.3, ls, batch);
      assert.ok(Math.abs(total(batch) - want) < 1e-12 * Math.max(1, Math.abs(want)), `${total(batch)} vs ${want}`);
      const losses = dpoLosses(batch, s);
      const h = 1e-6;
      batch.forEach((p, j) => {
        for (const k of ["chosen", "rejected"] as const) {
          const plus = batch.map((q, i) => (i === j ? { ...q, [k]: q[k] + h } : q));
          const minus = batch.map((q, i) => (i === j ? { ...q, [k]: q[k] - h } : q));
          const numeric = (total(plus) - total(minus)) / (2 * h);
          const analytic = k === "chosen" ? losses[j]!.dChosen : losses[j]!.dRejected;
          assert.ok(Math.abs(numeric - analytic) < 1e-6, `${type} pair ${j} d ${k}: ${analytic} vs ${numeric}`);
        }
        assert.equal(losses[j]!.chosenReward, 0.3 * (p.chosen - p.refChosen));
      });
    }
  });
}
