// What `tuna dpo` does to the shared training configuration: TRL's DPOConfig defaults where the user left a
// field at tuna train's default (TRL 1.13: learning_rate 1e-6, max_length 1024, truncation_mode keep_start),
// its own checks, and its help. `tuna train` refuses the DPO fields.
import { DPO_LOSS_TYPES, FIELD_NAMES, TRAIN_FIELDS, UNSUPPORTED_DPO_LOSS_TYPES, renderTrainHelp, type FieldName, type ResolvedTrainConfig, type TrainConfig } from "../../config/index.ts";
import { TunaError } from "../../util/errors.ts";

/** TRL's DPOConfig defaults that differ from tuna train's (SFT) ones. */
const DPO_DEFAULTS: Partial<TrainConfig> = { learning_rate: 1e-6, max_seq_length: 1024, truncation_mode: "keep_start" };

const DPO_FIELDS = FIELD_NAMES.filter((name) => TRAIN_FIELDS[name].group === "dpo");

export function withDpoDefaults(resolved: ResolvedTrainConfig): ResolvedTrainConfig {
  const config = { ...resolved.config };
  for (const [name, value] of Object.entries(DPO_DEFAULTS) as [FieldName, never][]) {
    if (resolved.sources[name].kind === "default") (config as Record<FieldName, unknown>)[name] = value;
  }
  const c = config;
  if (c.label_smoothing > 0 && !["sigmoid", "robust", "exo_pair", "aot", "aot_pair", "aot_unpaired"].includes(c.loss_type)) {
    throw new TunaError("CONFIG_INVALID", `label_smoothing ${c.label_smoothing} applies to the sigmoid, robust, exo_pair, aot and aot_pair losses, not to loss_type ${c.loss_type}; remove it or change the loss.`);
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

/** TRL loss types tuna does not implement get their own message (before the generic invalid-choice one). */
export function refuseUnsupportedLossType(args: readonly string[]): void {
  args.forEach((arg, i) => {
    const value = arg.startsWith("--loss_type=") || arg.startsWith("--loss-type=") ? arg.slice(arg.indexOf("=") + 1) : arg === "--loss_type" || arg === "--loss-type" ? args[i + 1] : undefined;
    if (value === undefined) return;
    const types = value.split(",").map((t) => t.trim()).filter((t) => t !== "");
    // TRL 1.13 writes RPO as the loss list [<loss>, "sft"] with loss_weights [1, alpha]: the same loss as rpo_alpha.
    const others = types.filter((t) => t !== "sft");
    const rpo = types.includes("sft") && others.length <= 1 ? ` TRL's ["${others[0] ?? "sigmoid"}", "sft"] with loss_weights [1, w] is --loss_type ${others[0] ?? "sigmoid"} --rpo_alpha w here (w x the chosen completions' mean token NLL, the same loss).` : "";
    if (types.length > 1) {
      throw new TunaError("UNSUPPORTED", `loss_type ${value}: lists of weighted loss types (TRL 1.13's loss_type list with loss_weights) are not implemented; give one loss type.${rpo}`);
    }
    if ((UNSUPPORTED_DPO_LOSS_TYPES as readonly string[]).includes(value)) {
      throw new TunaError("UNSUPPORTED", `loss_type ${value} is one of TRL's DPO losses that tuna does not implement (${UNSUPPORTED_DPO_LOSS_TYPES.join(", ")}); tuna has ${DPO_LOSS_TYPES.join(", ")}.${rpo}`);
    }
  });
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
