// DPO as a training objective over any TrainingModel: each micro-batch holds pairs as consecutive documents
// (prompt + chosen, prompt + rejected; src/data/preference.ts). The forward runs the reference (the same model
// with its adapters off, or log-probabilities computed before training, or none), then the policy; a
// sequence's log-probability is the sum of its completion tokens' (-token loss). The pair losses of
// src/train/dpo/loss.ts are summed, so the trainer's 1 / (pairs in the step) makes TRL's mean over pairs; the
// backward weighs each sequence's token losses by -d loss / d log-probability (and RPO's NLL on the chosen).
import type { Batch } from "../../data/batch.ts";
import type { ForwardOptions, ForwardResult, SpanScale, TrainingModel, UploadedBatch } from "../../model/types.ts";
import { TunaError } from "../../util/errors.ts";
import { divergenceScore, dpoLosses, type DpoLossSettings, type DpoLossType, type FDivergence } from "./loss.ts";

export interface DpoSettings extends DpoLossSettings {
  /** The weighted loss terms (TRL 1.13's loss_type list with loss_weights); unset = lossType alone, weight 1. */
  losses?: readonly { type: DpoLossType; weight: number }[];
  /** No reference: its log-probabilities are 0. */
  referenceFree: boolean;
  /** RPO: rpo_alpha x the chosen completions' NLL (mean over their tokens in the micro-batch) joins the loss. */
  rpoAlpha: number | undefined;
  /**
   * LD-DPO (TRL's ld_alpha): a completion's tokens beyond the shorter completion's length count ld_alpha times in
   * its log-probability (policy and reference); unset = 1.
   */
  ldAlpha?: number;
  /** f-DPO (TRL's f_divergence_type, f_alpha_divergence_coef): the losses compare f-scores of the log-ratios. */
  fDivergence?: { type: FDivergence; alpha: number };
  /** Reference log-probabilities computed before training, by pair (pairKey); used instead of a reference pass. */
  precomputed?: ReadonlyMap<string, readonly [number, number]>;
}

/** A pair's two documents in a batch, as [start, end) rows, and their completion (trained) token counts. */
interface PairSpans {
  chosen: [number, number];
  rejected: [number, number];
  chosenTokens: number;
  rejectedTokens: number;
  /** The row where each completion's tokens beyond the shorter completion's length begin (LD-DPO's tail). */
  chosenTail: number;
  rejectedTail: number;
  key: string;
}

const METRICS = ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"] as const;

/** A pair's identity: a hash of its two documents' tokens (the same pair in any batch, epoch or rank). */
export function pairKey(ids: Int32Array, chosen: readonly [number, number], rejected: readonly [number, number]): string {
  let a = 0x811c9dc5;
  let b = 0x01000193;
  const mix = (v: number): void => {
    a = Math.imul(a ^ v, 0x01000193) >>> 0;
    b = Math.imul(b ^ (v + 0x9e3779b9), 0x85ebca6b) >>> 0;
  };
  for (let i = chosen[0]; i < chosen[1]; i++) mix(ids[i]!);
  mix(-1);
  for (let i = rejected[0]; i < rejected[1]; i++) mix(ids[i]!);
  return `${a.toString(16)}.${b.toString(16)}.${chosen[1] - chosen[0]}.${rejected[1] - rejected[0]}`;
}

/** The pairs of a padding-free batch whose documents alternate chosen, rejected. */
export function pairsOf(batch: Batch): PairSpans[] {
  const cu = batch.cuSeqlens;
  const docs = cu.length - 1;
  // A rank with nothing to do this step runs a one-token batch without targets (the trainer's empty batch).
  let targets = 0;
  for (const t of batch.targets) if (t !== -100) targets++;
  if (targets === 0) return [];
  if (docs % 2 !== 0) throw new TunaError("INTERNAL", `a DPO batch has ${docs} documents; pairs need an even number (padding-free batches)`);
  const out: PairSpans[] = [];
  const trained = (lo: number, hi: number): number => {
    let n = 0;
    for (let i = lo; i < hi; i++) if (batch.targets[i] !== -100) n++;
    return n;
  };
  // The row after the `shared`-th trained row of [lo, hi) (hi when there are no more).
  const tailStart = (lo: number, hi: number, shared: number): number => {
    let n = 0;
    for (let i = lo; i < hi; i++) if (batch.targets[i] !== -100 && ++n === shared) return i + 1;
    return shared === 0 ? lo : hi;
  };
  for (let d = 0; d < docs; d += 2) {
    const chosen: [number, number] = [cu[d]!, cu[d + 1]!];
    const rejected: [number, number] = [cu[d + 1]!, cu[d + 2]!];
    const chosenTokens = trained(...chosen);
    const rejectedTokens = trained(...rejected);
    const shared = Math.min(chosenTokens, rejectedTokens);
    out.push({ chosen, rejected, chosenTokens, rejectedTokens, chosenTail: tailStart(...chosen, shared), rejectedTail: tailStart(...rejected, shared), key: pairKey(batch.ids, chosen, rejected) });
  }
  return out;
}

/** Sum of -token losses over rows [lo, hi): the sequence's log-probability of its trained tokens. */
export function sequenceLogp(losses: Float32Array, [lo, hi]: readonly [number, number]): number {
  let s = 0;
  for (let i = lo; i < hi; i++) s -= losses[i]!;
  return s;
}

/** A pair's two log-probabilities, each completion's tail (LD-DPO) weighted by `ldAlpha` (1: the plain sums). */
function pairLogps(losses: Float32Array, p: PairSpans, ldAlpha = 1): [number, number] {
  const one = ([lo, hi]: readonly [number, number], tail: number): number => sequenceLogp(losses, [lo, tail]) + ldAlpha * sequenceLogp(losses, [tail, hi]);
  return [one(p.chosen, p.chosenTail), one(p.rejected, p.rejectedTail)];
}

export function dpoTrainingModel(inner: TrainingModel, s: DpoSettings): TrainingModel {
  // The trainer asks a batch's pairs twice (lossUnits, then upload): found once.
  const found = new WeakMap<Batch, PairSpans[]>();
  const pairsIn = (batch: Batch): PairSpans[] => {
    let pairs = found.get(batch);
    if (pairs === undefined) found.set(batch, (pairs = pairsOf(batch)));
    return pairs;
  };
  const pairsByBatch = new Map<UploadedBatch, PairSpans[]>();
  const spansByBatch = new Map<UploadedBatch, SpanScale[]>();
  const keys = s.rpoAlpha === undefined ? [...METRICS] : [...METRICS, "nll_loss"];
  const fresh = (): Record<string, { sum: number; count: number }> => Object.fromEntries(keys.map((k) => [k, { sum: 0, count: 0 }]));
  const metrics = { train: fresh(), eval: fresh() };

  const referenceLogps = async (batch: UploadedBatch, pairs: PairSpans[]): Promise<[number, number][]> => {
    if (s.referenceFree) return pairs.map(() => [0, 0]);
    if (s.precomputed !== undefined) {
      return pairs.map((p) => {
        const found = s.precomputed!.get(p.key);
        if (found === undefined) throw new TunaError("INTERNAL", "a pair without a precomputed reference log-probability");
        return [found[0], found[1]];
      });
    }
    const ref = await inner.forward(batch, { adapters: false });
    return pairs.map((p) => pairLogps(ref.tokenLosses, p, s.ldAlpha));
  };

  return {
    backend: inner.backend,
    trainable: inner.trainable,
    get dropoutRng() {
      return inner.dropoutRng;
    },
    set dropoutRng(rng) {
      inner.dropoutRng = rng;
    },
    upload(batch) {
      const device = inner.upload(batch);
      pairsByBatch.set(device, pairsIn(batch));
      return device;
    },
    lossUnits: (batch) => pairsIn(batch).length,
    async forward(batch: UploadedBatch, options: ForwardOptions = {}): Promise<ForwardResult> {
      const pairs = pairsByBatch.get(batch);
      if (pairs === undefined) throw new TunaError("INTERNAL", "a DPO forward of a batch this objective did not upload");
      if (pairs.length === 0) {
        // Nothing to learn from, but the ranks keep in step (sharded layers gather in every forward).
        if (!s.referenceFree && s.precomputed === undefined) await inner.forward(batch, { adapters: false });
        const r = await inner.forward(batch, options);
        spansByBatch.set(batch, []);
        return { lossSum: 0, tokens: 0, tokenLosses: r.tokenLosses };
      }
      const ref = await referenceLogps(batch, pairs);
      const policy = await inner.forward(batch, options);
      let lossSum = 0;
      const spans: SpanScale[] = [];
      const policyLogps = pairs.map((p) => pairLogps(policy.tokenLosses, p, s.ldAlpha));
      // RPO: the chosen completions' mean token NLL over the micro-batch, weighted as P pair losses.
      let chosenTokens = 0;
      let chosenNll = 0;
      for (const p of pairs) {
        chosenTokens += p.chosenTokens;
        chosenNll -= sequenceLogp(policy.tokenLosses, p.chosen);
      }
      const rpoWeight = s.rpoAlpha === undefined || chosenTokens === 0 ? 0 : (s.rpoAlpha * pairs.length) / chosenTokens;
      const m = metrics[options.training === true ? "train" : "eval"];
      // Each weighted loss term; d loss / d summed log-probability of each completion, over the terms.
      const dChosen = new Array<number>(pairs.length).fill(0);
      const dRejected = new Array<number>(pairs.length).fill(0);
      // f-DPO: the losses see f(log-ratio) in place of each log-ratio (the losses allowed with it depend on their
      // difference alone), and each derivative carries f'(log-ratio).
      const f = divergenceScore(s.fDivergence?.type ?? "reverse_kl", s.fDivergence?.alpha ?? 0.5);
      const ratios = pairs.map((_, i) => [policyLogps[i]![0] - ref[i]![0], policyLogps[i]![1] - ref[i]![1]] as const);
      const scored = s.fDivergence !== undefined && s.fDivergence.type !== "reverse_kl";
      for (const term of s.losses ?? [{ type: s.lossType, weight: 1 }]) {
        // IPO and sigmoid_norm compare log-probabilities averaged over each completion's tokens (TRL divides by
        // the token count).
        const mean = term.type === "ipo" || term.type === "sigmoid_norm";
        const counts = pairs.map((p): [number, number] => (mean ? [Math.max(1, p.chosenTokens), Math.max(1, p.rejectedTokens)] : [1, 1]));
        const losses = dpoLosses(
          pairs.map((_, i) => {
            const [nc, nr] = counts[i]!;
            if (scored) return { chosen: f.value(ratios[i]![0]) / nc, rejected: f.value(ratios[i]![1]) / nr, refChosen: 0, refRejected: 0 };
            return { chosen: policyLogps[i]![0] / nc, rejected: policyLogps[i]![1] / nr, refChosen: ref[i]![0] / nc, refRejected: ref[i]![1] / nr };
          }),
          { ...s, lossType: term.type },
        );
        losses.forEach((r, i) => {
          const [sc, sr] = scored ? [f.slope(ratios[i]![0]), f.slope(ratios[i]![1])] : [1, 1];
          lossSum += term.weight * r.loss;
          dChosen[i]! += (term.weight * r.dChosen * sc) / counts[i]![0];
          dRejected[i]! += (term.weight * r.dRejected * sr) / counts[i]![1];
        });
      }
      // Each completion's shared part and its tail (weighted ldAlpha in the log-probability), RPO's NLL on all of
      // the chosen tokens.
      const ld = s.ldAlpha ?? 1;
      pairs.forEach((p, i) => {
        spans.push(
          { start: p.chosen[0], count: p.chosenTail - p.chosen[0], scale: -dChosen[i]! + rpoWeight },
          { start: p.chosenTail, count: p.chosen[1] - p.chosenTail, scale: -ld * dChosen[i]! + rpoWeight },
          { start: p.rejected[0], count: p.rejectedTail - p.rejected[0], scale: -dRejected[i]! },
          { start: p.rejectedTail, count: p.rejected[1] - p.rejectedTail, scale: -ld * dRejected[i]! },
        );
        const add = (k: string, v: number): void => {
          m[k]!.sum += v;
          m[k]!.count += 1;
        };
        // TRL 1.13 reports every loss type's rewards and log-probabilities from the summed log-probabilities
        // (IPO and sigmoid_norm average only inside their loss).
        const [chosen, rejected] = policyLogps[i]!;
        const chosenReward = s.beta * ratios[i]![0];
        const rejectedReward = s.beta * ratios[i]![1];
        add("rewards/chosen", chosenReward);
        add("rewards/rejected", rejectedReward);
        add("rewards/accuracies", chosenReward > rejectedReward ? 1 : 0);
        add("rewards/margins", chosenReward - rejectedReward);
        add("logps/chosen", chosen);
        add("logps/rejected", rejected);
      });
      if (s.rpoAlpha !== undefined && chosenTokens > 0) {
        lossSum += rpoWeight * chosenNll;
        m["nll_loss"]!.sum += (chosenNll / chosenTokens) * pairs.length;
        m["nll_loss"]!.count += pairs.length;
      }
      spansByBatch.set(batch, spans);
      return { lossSum, tokens: pairs.length, tokenLosses: policy.tokenLosses };
    },
    backward(batch, gradScale, layerDone) {
      const spans = spansByBatch.get(batch);
      if (spans === undefined) throw new TunaError("INTERNAL", "a DPO backward without its forward");
      return inner.backward(batch, gradScale, layerDone, spans);
    },
    free(batch) {
      pairsByBatch.delete(batch);
      spansByBatch.delete(batch);
      inner.free(batch);
    },
    takeMetrics(kind) {
      const out = metrics[kind];
      metrics[kind] = fresh();
      return out;
    },
  };
}

/** Reference log-probabilities of every pair, computed once before training (precompute_ref_log_probs). */
export async function precomputeReferenceLogps(inner: TrainingModel, batches: Iterable<Batch>, referenceAdaptersOff: boolean, ldAlpha?: number): Promise<Map<string, [number, number]>> {
  const out = new Map<string, [number, number]>();
  for (const batch of batches) {
    const pairs = pairsOf(batch);
    if (pairs.length === 0) continue;
    const device = inner.upload(batch);
    try {
      const r = await inner.forward(device, referenceAdaptersOff ? { adapters: false } : {});
      for (const p of pairs) out.set(p.key, pairLogps(r.tokenLosses, p, ldAlpha));
    } finally {
      inner.free(device);
    }
  }
  return out;
}
