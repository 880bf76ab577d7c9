// The DPO family of pair losses as TRL's DPOTrainer.dpo_loss computes them, with their derivatives with respect
// to the policy's log-probabilities of the chosen and rejected completions (what the backward weighs each
// sequence's token losses by). z = (chosen - ref chosen) - (rejected - ref rejected):
//   sigmoid  -(1 - e) log sigmoid(beta z) - e log sigmoid(-beta z)          (DPO; e = label_smoothing: cDPO)
//   robust   (-(1 - e) log sigmoid(beta z) + e log sigmoid(-beta z)) / (1 - 2e)
//   hinge    relu(1 - beta z)
//   ipo      (z - 1 / (2 beta))^2, on log-probabilities averaged over each completion's tokens
//   exo_pair s(u) (log s(u) - log(1 - e)) + s(-u) (log s(-u) - log e), u = beta z (e = 1e-3 when 0)  (EXO)
//   nca_pair -log s(rc) - log s(-rc) / 2 - log s(-rr) / 2, rc / rr the chosen / rejected rewards   (NCA)
//   sppo_hard (a - 1/(2 beta))^2 + (b + 1/(2 beta))^2, a / b the chosen / rejected log-ratios     (SPPO)
//   bco_pair -log s(beta a) - log s(-beta b)                                           (TRL 1.13's BCO pair loss)
//   sigmoid_norm  -log s(beta z) on log-probabilities averaged over each completion's tokens
//   apo_zero 1 - s(beta a) + s(beta b)                                                          (APO)
//   apo_down s(beta a) + 1 - s(beta z)
//   discopop -log s(u) (1 - m) + exp(-u) m, m = s(u / tau), tau = discopop_tau                   (DiscoPOP)
// and two losses over a whole micro-batch (dpoLosses), whose terms pair the i-th smallest of two sorted lists:
//   aot_pair -(1 - e) log s(beta d_i) - e log s(-beta d_i), d_i = sorted(a)_i - sorted(b)_i            (AOT;
//            TRL 1.13 names it aot_unpaired, tuna takes both)
//   aot      the same with d_i = sorted(chosen - rejected)_i - sorted(ref chosen - ref rejected)_i
// Rewards are beta x (policy - reference) log-probabilities, as TRL logs them.

export type DpoLossType =
  | "sigmoid"
  | "ipo"
  | "hinge"
  | "robust"
  | "exo_pair"
  | "nca_pair"
  | "bco_pair"
  | "sppo_hard"
  | "apo_zero"
  | "apo_down"
  | "discopop"
  | "aot"
  | "aot_pair"
  | "aot_unpaired"
  | "sigmoid_norm";

/** TRL 1.13's f_divergence_type: the f-DPO score of a log-ratio t, f'(t) (reverse_kl: t itself, plain DPO). */
export type FDivergence = "reverse_kl" | "forward_kl" | "js_divergence" | "alpha_divergence";

/** The losses TRL 1.13 allows with another f-divergence: those of the chosen - rejected score difference alone. */
export const F_DIVERGENCE_LOSS_TYPES: readonly string[] = ["sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft"];

/**
 * The score f'(t) of an f-divergence and its derivative, as TRL 1.13 computes them: forward_kl 1 - e^-t;
 * js_divergence log 2 + log sigmoid(t); alpha_divergence (e^((a-1) t) - 1) / (a - 1), its exponent clamped at 80
 * (float32), t itself when a is 1.
 */
export function divergenceScore(type: FDivergence, alpha: number): { value: (t: number) => number; slope: (t: number) => number } {
  switch (type) {
    case "reverse_kl":
      return { value: (t) => t, slope: () => 1 };
    case "forward_kl":
      return { value: (t) => 1 - Math.exp(-t), slope: (t) => Math.exp(-t) };
    case "js_divergence":
      return { value: (t) => Math.LN2 + logSigmoid(t), slope: (t) => sigmoid(-t) };
    case "alpha_divergence": {
      if (Math.abs(alpha - 1) < 1e-6) return { value: (t) => t, slope: () => 1 };
      const k = alpha - 1;
      return { value: (t) => (Math.exp(Math.min(k * t, 80)) - 1) / k, slope: (t) => (k * t < 80 ? Math.exp(k * t) : 0) };
    }
  }
}

export interface DpoLossSettings {
  lossType: DpoLossType;
  beta: number;
  labelSmoothing: number;
  /** DiscoPOP's temperature (TRL's discopop_tau, default 0.05). */
  discopopTau?: number;
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

/** sigmoid'(x) = s(x) s(-x). */
function dsigmoid(x: number): number {
  return sigmoid(x) * sigmoid(-x);
}

/** Indices 0..n-1 ordered by values (ascending; ties by index, as a stable sort leaves them). */
function order(values: readonly number[]): number[] {
  return values.map((_, i) => i).sort((i, j) => values[i]! - values[j]! || i - j);
}

/**
 * The loss of every pair of a micro-batch. For the pair losses each is dpoPairLoss; for AOT the i-th term
 * pairs the i-th smallest of two sorted lists, so pair j's derivatives are those of the terms its values
 * landed in (losses[j] is then the j-th term: their sum is the micro-batch's loss either way).
 */
export function dpoLosses(pairs: readonly PairLogps[], s: DpoLossSettings): PairLoss[] {
  if (s.lossType !== "aot" && s.lossType !== "aot_pair" && s.lossType !== "aot_unpaired") return pairs.map((p) => dpoPairLoss(p, s));
  const { beta, labelSmoothing: e } = s;
  const pairwise = s.lossType !== "aot";
  // aot_pair: chosen log-ratios vs rejected log-ratios; aot: policy margins vs reference margins.
  const first = pairs.map((p) => (pairwise ? p.chosen - p.refChosen : p.chosen - p.rejected));
  const second = pairs.map((p) => (pairwise ? p.rejected - p.refRejected : p.refChosen - p.refRejected));
  const byFirst = order(first);
  const bySecond = order(second);
  const terms = pairs.map((_, i) => {
    const bd = beta * (first[byFirst[i]!]! - second[bySecond[i]!]!);
    return { loss: -(1 - e) * logSigmoid(bd) - e * logSigmoid(-bd), dDelta: beta * (-(1 - e) * sigmoid(-bd) + e * sigmoid(bd)) };
  });
  const dFirst = new Array<number>(pairs.length);
  const dSecond = new Array<number>(pairs.length);
  terms.forEach((t, i) => {
    dFirst[byFirst[i]!] = t.dDelta;
    dSecond[bySecond[i]!] = -t.dDelta;
  });
  return pairs.map((p, j) => ({
    loss: terms[j]!.loss,
    // aot_pair: first = chosen - ref, second = rejected - ref; aot: first = chosen - rejected (second has no policy term).
    dChosen: dFirst[j]!,
    dRejected: pairwise ? dSecond[j]! : -dFirst[j]!,
    chosenReward: beta * (p.chosen - p.refChosen),
    rejectedReward: beta * (p.rejected - p.refRejected),
  }));
}

export function dpoPairLoss(p: PairLogps, s: DpoLossSettings): PairLoss {
  const { beta, labelSmoothing: e } = s;
  const a = p.chosen - p.refChosen;
  const b = p.rejected - p.refRejected;
  const z = a - b;
  const bz = beta * z;
  const rewards = { chosenReward: beta * a, rejectedReward: beta * b };
  // The losses of one log-ratio each: their own derivatives for chosen and rejected.
  switch (s.lossType) {
    case "nca_pair":
      return {
        loss: -logSigmoid(beta * a) - 0.5 * logSigmoid(-beta * a) - 0.5 * logSigmoid(-beta * b),
        dChosen: beta * (-sigmoid(-beta * a) + 0.5 * sigmoid(beta * a)),
        dRejected: beta * 0.5 * sigmoid(beta * b),
        ...rewards,
      };
    case "bco_pair":
      return { loss: -logSigmoid(beta * a) - logSigmoid(-beta * b), dChosen: -beta * sigmoid(-beta * a), dRejected: beta * sigmoid(beta * b), ...rewards };
    case "sppo_hard":
      return { loss: (a - 0.5 / beta) ** 2 + (b + 0.5 / beta) ** 2, dChosen: 2 * (a - 0.5 / beta), dRejected: 2 * (b + 0.5 / beta), ...rewards };
    case "apo_zero":
      return { loss: 1 - sigmoid(beta * a) + sigmoid(beta * b), dChosen: -beta * dsigmoid(beta * a), dRejected: beta * dsigmoid(beta * b), ...rewards };
    case "apo_down":
      return { loss: sigmoid(beta * a) + 1 - sigmoid(bz), dChosen: beta * (dsigmoid(beta * a) - dsigmoid(bz)), dRejected: beta * dsigmoid(bz), ...rewards };
    default:
      break;
  }
  let loss: number;
  let dz: number;
  switch (s.lossType) {
    case "sigmoid_norm": // on per-token means (the objective divides by the token counts, as for ipo)
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
    case "exo_pair": {
      // Older TRL replaced a label_smoothing of 0 by 1e-3 for EXO; TRL 1.13 and tuna dpo refuse 0 (dpo-config.ts).
      const eps = e === 0 ? 1e-3 : e;
      loss = sigmoid(bz) * (logSigmoid(bz) - Math.log(1 - eps)) + sigmoid(-bz) * (logSigmoid(-bz) - Math.log(eps));
      dz = beta * dsigmoid(bz) * (bz + Math.log(eps / (1 - eps)));
      break;
    }
    case "aot":
    case "aot_pair":
    case "aot_unpaired":
      throw new Error(`${s.lossType} is a loss over a micro-batch: use dpoLosses`);
    case "discopop": {
      const tau = s.discopopTau ?? 0.05;
      const m = sigmoid(bz / tau);
      const dm = dsigmoid(bz / tau) / tau;
      loss = -logSigmoid(bz) * (1 - m) + Math.exp(-bz) * m;
      dz = beta * (-sigmoid(-bz) * (1 - m) + logSigmoid(bz) * dm - Math.exp(-bz) * m + Math.exp(-bz) * dm);
      break;
    }
  }
  return { loss, dChosen: dz, dRejected: -dz, ...rewards };
}
