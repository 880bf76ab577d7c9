// The DPO objective of a run from its configuration: the loss settings, and where the reference comes from.
// LoRA / QLoRA: the base with the adapters off, at every step or once before training
// (precompute_ref_log_probs); full fine-tuning: the starting weights' log-probabilities, always computed before
// training and kept in the output folder (dpo_reference_logps.json), so a resumed run uses the same ones.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { TrainConfig } from "../../config/index.ts";
import { makeBatches, toModelBatch } from "../../data/batches.ts";
import type { PackedSequence } from "../../data/types.ts";
import type { TrainingModel } from "../../model/types.ts";
import { TunaError } from "../../util/errors.ts";
import { writeJson } from "../checkpoint.ts";
import type { DpoLossType } from "./loss.ts";
import { dpoTrainingModel, precomputeReferenceLogps, type DpoSettings } from "./objective.ts";

export const REFERENCE_LOGPS_FILE = "dpo_reference_logps.json";

/**
 * TRL 1.13's loss list with its weights: the preference losses as weighted terms, and sft (the chosen completions'
 * mean token NLL) as the RPO weight, which is what older TRL's rpo_alpha set.
 */
export function dpoSettingsOf(c: TrainConfig): DpoSettings {
  const weighted = c.loss_type.map((type, i) => ({ type, weight: c.loss_weights?.[i] ?? 1 }));
  const losses = weighted.filter((l): l is { type: DpoLossType; weight: number } => l.type !== "sft");
  const sft = weighted.find((l) => l.type === "sft");
  return {
    lossType: losses[0]?.type ?? "sigmoid",
    losses,
    beta: c.beta,
    labelSmoothing: c.label_smoothing,
    discopopTau: c.discopop_tau,
    referenceFree: c.reference_free,
    rpoAlpha: sft?.weight ?? c.rpo_alpha,
    ...(c.ld_alpha === undefined ? {} : { ldAlpha: c.ld_alpha }),
    ...(c.f_divergence_type === "reverse_kl" ? {} : { fDivergence: { type: c.f_divergence_type, alpha: c.f_alpha_divergence_coef } }),
  };
}

export async function dpoObjective(
  base: TrainingModel,
  c: TrainConfig,
  data: { train: readonly PackedSequence[]; eval?: readonly PackedSequence[] },
  o: { fullFineTuning: boolean; outputDir: string; resuming: boolean; lead: boolean; padTokenId: number; onNote: (m: string) => void },
): Promise<TrainingModel> {
  const settings = dpoSettingsOf(c);
  if (c.reference_free) return dpoTrainingModel(base, settings);
  if (!c.precompute_ref_log_probs && !o.fullFineTuning) return dpoTrainingModel(base, settings);
  const file = join(o.outputDir, REFERENCE_LOGPS_FILE);
  if (o.resuming && o.fullFineTuning) {
    // The weights have moved since: the reference must be the one computed when training began.
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (e) {
      throw new TunaError("FILE_NOT_FOUND", `resuming full fine-tuning DPO needs ${file}, the reference log-probabilities computed when the run began; it is missing, so the run cannot resume exactly. Start again.`, { cause: e });
    }
    const json = JSON.parse(text) as { pairs?: Record<string, [number, number]> };
    return dpoTrainingModel(base, { ...settings, precomputed: new Map(Object.entries(json.pairs ?? {})) });
  }
  if (o.fullFineTuning && !c.precompute_ref_log_probs) o.onNote("full fine-tuning DPO: the reference log-probabilities are those of the starting weights, computed once before training (there is no second copy of the model).");
  const sequences = [...data.train, ...(data.eval ?? [])];
  const plans = makeBatches(sequences, { batchSize: c.per_device_eval_batch_size, padded: false, sampling: "sequential", seed: c.seed, epoch: 0 });
  const started = performance.now();
  const precomputed = await precomputeReferenceLogps(
    base,
    plans.map((plan) => toModelBatch(plan, sequences, o.padTokenId)),
    !o.fullFineTuning,
    settings.ldAlpha,
  );
  o.onNote(`reference log-probabilities of ${precomputed.size} pairs computed in ${((performance.now() - started) / 1000).toFixed(1)} s.`);
  if (o.lead) await writeJson(file, { version: 1, pairs: Object.fromEntries(precomputed) });
  return dpoTrainingModel(base, { ...settings, precomputed });
}
