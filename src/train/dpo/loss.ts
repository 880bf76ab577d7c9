// The DPO family of pair losses as TRL's DPOTrainer.dpo_loss computes them, with their derivatives with respect
// to the policy's log-probabilities of the chosen and rejected completions (what the backward weighs each
// sequence's token losses by). z = (chosen - ref chosen) - (rejected - ref rejected):
//   sigmoid  -(1 - e) log sigmoid(beta z) - e log sigmoid(-beta z)          (DPO; e = label_smoothing: cDPO)
//   robust   (-(1 - e) log sigmoid(beta z) + e log sigmoid(-beta z)) / (1 - 2e)
//   hinge    relu(1 - beta z)
//   ipo      (z - 1 / (2 beta))^2, on log-probabilities averaged over each completion's tokens
// Rewards are beta x (policy - reference) log-probabilities, as TRL logs them.

export type DpoLossType = "sigmoid" | "ipo" | "hinge" | "robust";

export interface DpoLossSettings {
  lossType: DpoLossType;
  beta: number;
  labelSmoothing: number;
}

/** Log-probabilities of one pair's completions under the policy and the reference (0 when reference-free). */
export interface PairLogps {
  chosen: number;
  rejected: number;
  refChosen: number;
  refRejected: number;
}

export interface PairLoss {
  loss: number;
  /** d loss / d chosen and d loss / d rejected (policy log-probabilities). */
  dChosen: number;
  dRejected: number;
  chosenReward: number;
  rejectedReward: number;
}

/** log(sigmoid(x)) without overflow: -softplus(-x). */
export function logSigmoid(x: number): number {
  return x >= 0 ? -Math.log1p(Math.exp(-x)) : x - Math.log1p(Math.exp(x));
}

export function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

export function dpoPairLoss(p: PairLogps, s: DpoLossSettings): PairLoss {
  const { beta, labelSmoothing: e } = s;
  const z = p.chosen - p.refChosen - (p.rejected - p.refRejected);
  const bz = beta * z;
  let loss: number;
  let dz: number;
  switch (s.lossType) {
    case "sigmoid":
      loss = -(1 - e) * logSigmoid(bz) - e * logSigmoid(-bz);
      dz = beta * (-(1 - e) * sigmoid(-bz) + e * sigmoid(bz));
      break;
    case "robust":
      loss = (-(1 - e) * logSigmoid(bz) + e * logSigmoid(-bz)) / (1 - 2 * e);
      dz = (beta * (-(1 - e) * sigmoid(-bz) - e * sigmoid(bz))) / (1 - 2 * e);
      break;
    case "hinge":
      loss = Math.max(0, 1 - bz);
      dz = 1 - bz > 0 ? -beta : 0;
      break;
    case "ipo": {
      const d = z - 1 / (2 * beta);
      loss = d * d;
      dz = 2 * d;
      break;
    }
  }
  return { loss, dChosen: dz, dRejected: -dz, chosenReward: beta * (p.chosen - p.refChosen), rejectedReward: beta * (p.rejected - p.refRejected) };
}
