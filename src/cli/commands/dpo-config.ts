// What `tuna dpo` does to the shared training configuration: TRL's DPOConfig defaults where the user left a
// field at tuna train's default (TRL 1.13: learning_rate 1e-6, max_length 1024, truncation_mode keep_start),
// its own checks, and its help. `tuna train` refuses the DPO fields.
import { FIELD_NAMES, TRAIN_FIELDS, renderTrainHelp, type FieldName, type ResolvedTrainConfig, type TrainConfig } from "../../config/index.ts";
import { TunaError } from "../../util/errors.ts";
import { F_DIVERGENCE_LOSS_TYPES } from "../../train/dpo/loss.ts";

/** TRL's DPOConfig defaults that differ from tuna train's (SFT) ones. */
const DPO_DEFAULTS: Partial<TrainConfig> = { learning_rate: 1e-6, max_seq_length: 1024, truncation_mode: "keep_start" };

const DPO_FIELDS = FIELD_NAMES.filter((name) => TRAIN_FIELDS[name].group === "dpo");

export function withDpoDefaults(resolved: ResolvedTrainConfig): ResolvedTrainConfig {
  const config = { ...resolved.config };
  for (const [name, value] of Object.entries(DPO_DEFAULTS) as [FieldName, never][]) {
    if (resolved.sources[name].kind === "default") (config as Record<FieldName, unknown>)[name] = value;
  }
  const c = config;
  // TRL's disable_dropout (default true) switches off every dropout module, the adapters' included.
  if (c.disable_dropout) c.lora_dropout = 0;
  const types: readonly string[] = c.loss_type;
  if (c.label_smoothing > 0 && !types.some((t) => ["sigmoid", "robust", "exo_pair", "aot", "aot_pair", "aot_unpaired"].includes(t))) {
    throw new TunaError("CONFIG_INVALID", `label_smoothing ${c.label_smoothing} applies to the sigmoid, robust, exo_pair, aot and aot_pair losses, not to loss_type ${types.join(",")}; remove it or change the loss.`);
  }
  if (types.includes("exo_pair") && c.label_smoothing === 0) {
    throw new TunaError("CONFIG_INVALID", "loss_type exo_pair needs label_smoothing > 0 (EXO's epsilon; the paper recommends 1e-3), as TRL requires.");
  }
  if (c.loss_weights !== undefined && c.loss_weights.length !== types.length) {
    throw new TunaError("CONFIG_INVALID", `loss_weights has ${c.loss_weights.length} value(s) for ${types.length} loss type(s) (${types.join(",")}); give one weight per loss type, in order.`);
  }
  if (c.f_divergence_type !== "reverse_kl" && !types.every((t) => F_DIVERGENCE_LOSS_TYPES.includes(t))) {
    throw new TunaError("CONFIG_INVALID", `f_divergence_type ${c.f_divergence_type} takes the loss types ${F_DIVERGENCE_LOSS_TYPES.join(", ")} only (the others have no f-divergence form), not ${types.join(",")}; use reverse_kl or change the loss.`);
  }
  if (new Set(types).size !== types.length) throw new TunaError("CONFIG_INVALID", `loss_type ${types.join(",")} names a loss twice; give each once, weighted by loss_weights.`);
  if (types.includes("sft") && c.rpo_alpha !== undefined) {
    throw new TunaError("CONFIG_INVALID", "loss_type sft and rpo_alpha are the same term (the chosen completions' mean token NLL): give its weight in one place, loss_weights or rpo_alpha.");
  }
  if (c.packing) throw new TunaError("CONFIG_INVALID", "tuna dpo does not pack pairs together: each pair's chosen and rejected run side by side, padding-free. Remove --packing.");
  return { ...resolved, config };
}

export function refuseDpoFields(resolved: ResolvedTrainConfig): ResolvedTrainConfig {
  const set = DPO_FIELDS.filter((name) => resolved.sources[name].kind !== "default");
  if (set.length > 0) {
    throw new TunaError("CONFIG_INVALID", `${set.map((n) => `--${n}`).join(", ")} ${set.length === 1 ? "is a setting" : "are settings"} of preference training: run tuna dpo, or remove ${set.length === 1 ? "it" : "them"} (tuna train is SFT).`);
  }
  return resolved;
}

export function renderDpoHelp(): string {
  const train = renderTrainHelp().split("\n");
  return [
    "usage: tuna dpo [CONFIG.yaml | CONFIG.json] [--config PATH] [--FIELD VALUE ...]",
    "",
    "Preference training (TRL's DPOTrainer): a dataset of prompt / chosen / rejected (text or conversations; the",
    "prompt may be implicit in chosen and rejected's shared start), LoRA / QLoRA with the base as the reference",
    "(adapters off), or full fine-tuning with reference log-probabilities computed before training. Every",
    "`tuna train` flag applies; where left unset, TRL's DPOConfig defaults replace tuna train's: learning_rate",
    "1e-6, max_length 1024, truncation_mode keep_start (TRL 1.13). --packing does not apply.",
    ...train.slice(train.findIndex((l) => l === "") ),
  ].join("\n");
}
