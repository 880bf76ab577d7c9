// Rules between fields (and between fields and the accelerate file) that no single field's type can
// express, plus the list of accepted-but-unsupported features the train command refuses.
import { UNSUPPORTED_REPORTERS } from "./schema.ts";
import type { LaunchConfig } from "./accelerate.ts";
import type { FieldName, TrainConfig } from "./schema.ts";

/** Renders one field for a message: `bf16 = true (flag --bf16)`. */
export type ShowField = (field: FieldName) => string;

interface Rule {
  /** The rule is skipped when any of these fields already has an invalid value. */
  fields: readonly FieldName[];
  check: (c: TrainConfig, launch: LaunchConfig | undefined, show: ShowField) => string | undefined;
}

const hasSplit = (c: TrainConfig, word: string): boolean => c.splits.some((s) => s.includes(word));

const RULES: readonly Rule[] = [
  {
    fields: ["use_4bit_quantization", "use_8bit_quantization"],
    check: (c, _l, show) =>
      c.use_4bit_quantization && c.use_8bit_quantization
        ? `${show("use_4bit_quantization")} and ${show("use_8bit_quantization")}: choose one quantization`
        : undefined,
  },
  {
    fields: ["bf16", "fp16"],
    check: (c, _l, show) =>
      c.bf16 && c.fp16 ? `${show("bf16")} and ${show("fp16")}: choose one mixed-precision dtype` : undefined,
  },
  {
    fields: ["max_steps", "num_train_epochs"],
    check: (c, _l, show) =>
      c.max_steps <= 0 && c.num_train_epochs <= 0
        ? `${show("max_steps")} and ${show("num_train_epochs")}: nothing to train; set max_steps > 0 or num_train_epochs > 0`
        : undefined,
  },
  {
    // HF Trainer refuses to fine-tune a purely quantized model; adapters are what gets trained.
    fields: ["use_4bit_quantization", "use_8bit_quantization", "use_peft_lora"],
    check: (c, _l, show) => {
      const quantized = c.use_4bit_quantization ? "use_4bit_quantization" : c.use_8bit_quantization ? "use_8bit_quantization" : undefined;
      return quantized !== undefined && !c.use_peft_lora
        ? `${show(quantized)} with ${show("use_peft_lora")}: a quantized base model cannot be trained directly; add --use_peft_lora True`
        : undefined;
    },
  },
  {
    // PEFT's use_dora is a LoraConfig option: without adapters there is nothing for it to change.
    fields: ["use_dora", "use_peft_lora"],
    check: (c, _l, show) =>
      c.use_dora && !c.use_peft_lora ? `${show("use_dora")} with ${show("use_peft_lora")}: DoRA is a kind of LoRA adapter; add --use_peft_lora True` : undefined,
  },
  {
    fields: ["splits"],
    check: (c, _l, show) => (hasSplit(c, "train") ? undefined : `${show("splits")}: there is no training split (a name containing train)`),
  },
  {
    fields: ["eval_strategy", "splits"],
    check: (c, _l, show) =>
      c.eval_strategy !== "no" && !hasSplit(c, "test")
        ? `${show("eval_strategy")} with ${show("splits")}: evaluation needs a split whose name contains test`
        : undefined,
  },
  {
    fields: ["group_by_length", "train_sampling_strategy"],
    check: (c, _l, show) =>
      c.group_by_length && c.train_sampling_strategy === "sequential"
        ? `${show("group_by_length")} with ${show("train_sampling_strategy")}: group_by_length is transformers 4's name for train_sampling_strategy group_by_length; give one order`
        : undefined,
  },
  {
    fields: ["use_unsloth", "config_file"],
    check: (c, launch, show) =>
      c.use_unsloth && launch !== undefined && launch.numProcesses > 1
        ? `${show("use_unsloth")} with num_processes = ${launch.numProcesses} (accelerate config ${launch.source}): ` +
          "unsloth cannot run distributed (the peft example refuses it too); drop --use_unsloth"
        : undefined,
  },
  {
    // mixed_precision "no" is not a contradiction: the Trainer's --bf16/--fp16 override it, as in the
    // peft FSDP QLoRA example (fsdp_config_qlora.yaml has 'no', the launch line --bf16 True).
    fields: ["bf16", "fp16", "config_file"],
    check: (c, launch, show) => {
      const mp = launch?.mixedPrecision;
      if (launch === undefined || mp === undefined || mp === "no") return undefined;
      const contradicting = mp === "fp16" && c.bf16 ? "bf16" : mp === "bf16" && c.fp16 ? "fp16" : undefined;
      return contradicting === undefined
        ? undefined
        : `${show(contradicting)} contradicts mixed_precision = ${mp} (accelerate config ${launch.source}); make them agree`;
    },
  },
];

/** Messages for every rule broken by fields that are each valid on their own. */
export function checkConflicts(
  config: TrainConfig,
  launch: LaunchConfig | undefined,
  invalidFields: ReadonlySet<FieldName>,
  show: ShowField,
): string[] {
  const messages: string[] = [];
  for (const rule of RULES) {
    if (rule.fields.some((f) => invalidFields.has(f))) continue;
    const message = rule.check(config, launch, show);
    if (message !== undefined) messages.push(message);
  }
  return messages;
}

/** Features a valid configuration may ask for that this version of tuna cannot do, as messages. */
export function unsupportedFeatures(config: TrainConfig): string[] {
  const messages: string[] = [];
  if (config.push_to_hub && (config.hub_model_id === undefined || !config.hub_model_id.includes("/"))) {
    messages.push(`push_to_hub needs --hub_model_id namespace/name (the repo to push to)${config.hub_model_id === undefined ? "" : `; "${config.hub_model_id}" has no namespace`}.`);
  }
  const unsupported = config.report_to.filter((r) => (UNSUPPORTED_REPORTERS as readonly string[]).includes(r));
  for (const r of unsupported) {
    messages.push(
      r === "wandb"
        ? "report_to wandb is not supported: W&B's offline run files are its own protobuf record stream, which tuna cannot write faithfully. Use report_to tensorboard and `wandb sync --sync-tensorboard output_dir/runs`, or report_to mlflow."
        : `report_to ${r} is not supported: tuna writes tensorboard, mlflow and jsonl; use one of them.`,
    );
  }
  if (config.use_unsloth) {
    messages.push("use_unsloth is not supported: tuna has its own fused kernels, so unsloth is not needed; drop --use_unsloth.");
  }
  return messages;
}
