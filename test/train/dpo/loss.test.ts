// The DPO pair losses: values against the formulas written out here independently (TRL's dpo_loss, from its
// source as remembered), and the derivatives against central differences, for every loss type, with and
// without label smoothing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { dpoPairLoss, logSigmoid, type DpoLossType, type PairLogps } from "../../../src/train/dpo/loss.ts";

const softplus = (x: number): number => Math.log(1 + Math.exp(x));
const sig = (x: number): number => 1 / (1 + Math.exp(-x));
const logsig = (x: number): number => -softplus(-x);
/** TRL's formulas, literally (softplus(-x) = -log sigmoid(x)). */
function reference(type: DpoLossType, beta: number, ls: number, p: PairLogps): number {
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

for (const type of ["sigmoid", "robust", "hinge", "ipo", "exo_pair", "nca_pair", "sppo_hard", "apo_zero", "apo_down", "discopop"] as const) {
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
