// The one schema of `tuna train`: every field's type, default, one-line doc and group, in help order.
// Names are the HF snake_case names (peft examples/sft ModelArguments/DataTrainingArguments, TrainingArguments).
import { z } from "zod";
import {
  REQUIRED,
  boolField,
  choiceField,
  customField,
  floatField,
  intField,
  listField,
  optionalBoolField,
  optionalFloatField,
  optionalIntField,
  optionalNumberListField,
  optionalStepsField,
  optionalTextField,
  splitCommaList,
  stepsField,
  textField,
  type FieldSpec,
  type Group,
} from "./fields.ts";

/**
 * HF optimizer names tuna accepts, and what each becomes. tuna has one optimizer: AdamW with torch
 * semantics (decoupled weight decay, bias-corrected moments, fp32 moments).
 */
export const OPTIMIZER_MAPPING = {
  adamw_torch: "AdamW",
  adamw_torch_fused: "AdamW (tuna's kernel is already one fused update)",
  adamw_hf: "AdamW (same update as adamw_torch)",
  paged_adamw_32bit: "AdamW (no paging; moments stay on the GPU)",
  paged_adamw_8bit: "AdamW with fp32 moments (8-bit moments are not implemented)",
  adamw_8bit: "AdamW with fp32 moments (8-bit moments are not implemented)",
} as const;

const OPTIMIZERS = Object.keys(OPTIMIZER_MAPPING) as [keyof typeof OPTIMIZER_MAPPING, ...(keyof typeof OPTIMIZER_MAPPING)[]];

/** transformers' other report_to integrations: known, so that the error says why (validate.ts). */
export const UNSUPPORTED_REPORTERS = ["wandb", "comet_ml", "clearml", "neptune", "dvclive", "azure_ml", "codecarbon", "flyte", "dagshub", "swanlab", "trackio"] as const;

/** The DPO loss types tuna implements, and TRL's others (named in messages). */
export const DPO_LOSS_TYPES = ["sigmoid", "ipo", "hinge", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "apo_zero", "apo_down", "discopop", "aot", "aot_pair", "aot_unpaired", "sigmoid_norm", "sft"] as const;

const DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj", "up_proj", "gate_proj"];

/** A list holding only all-linear (e.g. YAML `[all-linear]`) means all-linear; inside a longer list it is an error. */
function targetModulesValue(value: unknown): unknown {
  const list = typeof value === "string" ? splitCommaList(value) : value;
  return Array.isArray(list) && list.length === 1 && list[0] === "all-linear" ? "all-linear" : list;
}

/** `all-linear` (every linear layer except the output head, as PEFT does) or a list of module names. */
const targetModulesField: FieldSpec<"all-linear" | string[]> = {
  ...customField(
    { group: "model", doc: "Modules that get LoRA adapters: a comma list of module names, or all-linear." },
    "all-linear | comma list of module names",
    DEFAULT_TARGET_MODULES,
    z.union([z.literal("all-linear"), z.array(z.string().regex(/^\S+$/).refine((m) => m !== "all-linear")).min(1)]),
    targetModulesValue,
  ),
  fromFile: targetModulesValue,
};

const REPORTERS = ["none", "all", "tensorboard", "jsonl", "mlflow", ...UNSUPPORTED_REPORTERS] as const;
const STRATEGIES = ["no", "steps", "epoch"] as const;

export const TRAIN_FIELDS = {
  // ---- model: peft examples/sft ModelArguments
  model_name_or_path: textField({ group: "model", default: REQUIRED, doc: "Model folder or Hugging Face hub id to fine-tune." }),
  model_revision: optionalTextField({ group: "model", doc: "Hub revision (branch, tag or commit) of model_name_or_path; unset = main." }),
  chat_template_format: choiceField({
    group: "model",
    choices: ["chatml", "zephyr", "none"],
    default: "none",
    doc: "Chat template rendered from each row's `messages`; none if the dataset is already formatted.",
  }),
  lora_alpha: intField({ group: "model", default: 16, min: 1, doc: "LoRA scaling numerator: adapters are scaled by lora_alpha / lora_r." }),
  lora_dropout: floatField({ group: "model", default: 0.1, min: 0, max: 1, maxOpen: true, doc: "Dropout applied to the input of the LoRA adapters." }),
  lora_r: intField({ group: "model", default: 64, min: 1, doc: "LoRA rank." }),
  lora_target_modules: targetModulesField,
  use_rslora: boolField({ group: "model", default: false, doc: "Rank-stabilized LoRA: scale the adapter by lora_alpha / sqrt(lora_r) instead of lora_alpha / lora_r (PEFT's use_rslora)." }),
  use_dora: boolField({
    group: "model",
    default: false,
    doc: "DoRA (PEFT's use_dora): each adapted layer's output is rescaled per output feature by a trained magnitude over the row norm of W + BA; saves lora_magnitude_vector beside lora_A/lora_B.",
  }),
  use_nested_quant: boolField({ group: "model", default: false, aliases: ["use_bnb_nested_quant"], doc: "Double quantization: also quantize the 4-bit quantization constants." }),
  bnb_4bit_compute_dtype: choiceField({
    group: "model",
    choices: ["float16", "bfloat16", "float32"],
    default: "float16",
    doc: "Dtype 4-bit weights are dequantized to for matmuls.",
  }),
  bnb_4bit_quant_storage_dtype: choiceField({
    group: "model",
    choices: ["float16", "bfloat16", "float32", "uint8"],
    default: "uint8",
    aliases: ["bnb_4bit_quant_storage"],
    doc: "Dtype the packed 4-bit codes are stored as (bfloat16 lets ZeRO-3/FSDP shard them with the rest).",
  }),
  bnb_4bit_quant_type: choiceField({ group: "model", choices: ["nf4", "fp4"], default: "nf4", doc: "4-bit code book: NormalFloat4 or FP4." }),
  use_flash_attn: boolField({ group: "model", default: false, doc: "Use the flash attention kernel." }),
  use_peft_lora: boolField({ group: "model", default: false, aliases: ["use_peft"], doc: "Train LoRA adapters instead of the full model (TRL's scripts: --use_peft)." }),
  use_8bit_quantization: boolField({ group: "model", default: false, aliases: ["load_in_8bit"], doc: "Load the base model in 8 bits (TRL's scripts: --load_in_8bit)." }),
  use_4bit_quantization: boolField({ group: "model", default: false, aliases: ["load_in_4bit"], doc: "Load the base model in 4 bits (QLoRA; TRL's scripts: --load_in_4bit)." }),
  use_reentrant: boolField({ group: "model", default: false, doc: "Reentrant gradient checkpointing (torch's use_reentrant)." }),
  use_unsloth: boolField({ group: "model", default: false, doc: "Unsloth kernels; accepted but not supported (tuna has its own kernels)." }),

  // ---- data: DataTrainingArguments, plus TRL SFTConfig fields
  dataset_name: textField({
    group: "data",
    default: "timdettmers/openassistant-guanaco",
    doc: "Hub dataset id, or a folder saved with save_to_disk (one subfolder per split).",
  }),
  packing: boolField({ group: "data", default: false, doc: "Pack several examples into each max_seq_length sequence." }),
  packing_strategy: choiceField({
    group: "data",
    choices: ["bfd", "wrapped"],
    default: "bfd",
    doc: "bfd: best-fit-decreasing, examples kept whole and isolated; wrapped: concatenate and cut.",
  }),
  dataset_text_field: textField({ group: "data", default: "text", doc: "Dataset column holding the training text." }),
  max_seq_length: intField({
    group: "data",
    aliases: ["max_length"],
    default: 512,
    min: 1,
    doc: "Longest sequence in tokens (TRL's newer name: max_length).",
  }),
  eos_token: optionalTextField({ group: "data", doc: "TRL's eos_token: a token of the vocabulary that ends each text and completion in place of the tokenizer's EOS (and is saved as its eos_token)." }),
  pad_token: optionalTextField({ group: "data", doc: "TRL's pad_token: a token of the vocabulary to pad with; unset = the tokenizer's pad, else its EOS." }),
  append_concat_token: boolField({
    group: "data",
    default: true,
    doc: "End each plain-text example and each completion with EOS, as TRL does (add_eos); false appends none (TRL 0.8's packing with append_concat_token False, the seed workflow's setting).",
  }),
  add_special_tokens: boolField({ group: "data", default: false, doc: "Let the tokenizer add its special tokens (BOS...) to each example." }),
  splits: listField({
    group: "data",
    default: ["train", "test"],
    item: z.string().regex(/train|test/),
    itemType: "split names containing train or test",
    doc: "Dataset splits to load; names must contain train or test.",
  }),
  assistant_only_loss: boolField({ group: "data", default: false, doc: "Train only on assistant turns of chat data." }),
  chat_template_file: optionalTextField({
    group: "data",
    doc: "A .jinja chat template file used instead of the format's (or the tokenizer's) template.",
  }),
  truncation_mode: choiceField({
    group: "data",
    choices: ["keep_start", "keep_end"],
    default: "keep_start",
    doc: "Which end of an over-long example to keep (TRL's truncation_mode).",
  }),
  drop_long_examples: boolField({ group: "data", default: false, doc: "Drop examples longer than max_seq_length instead of truncating them." }),
  skip_bad_rows: boolField({ group: "data", default: false, doc: "Skip malformed dataset rows (counted and reported) instead of stopping." }),
  test_split_ratio: floatField({
    group: "data",
    default: 0,
    min: 0,
    max: 1,
    maxOpen: true,
    doc: "When the dataset has only a train split and test is requested, hold out this fraction (seeded, deterministic).",
  }),
  completion_only_loss: optionalBoolField({
    group: "data",
    doc: "Train only on completions of prompt/completion data; unset = yes for such data.",
  }),

  // ---- training: HF TrainingArguments
  output_dir: textField({ group: "training", default: "trainer_output", doc: "Where checkpoints and the final adapter are written." }),
  overwrite_output_dir: boolField({ group: "training", default: false, doc: "Allow writing into a non-empty output_dir." }),
  resume_from_checkpoint: optionalTextField({ group: "training", doc: "A checkpoint-N folder to resume from." }),
  seed: intField({ group: "training", default: 42, min: 0, doc: "Random seed for initialization, dropout and data order." }),
  num_train_epochs: floatField({ group: "training", default: 3, doc: "Epochs to train (fractions allowed); ignored when max_steps > 0." }),
  max_steps: intField({ group: "training", default: -1, doc: "Total optimizer steps; <= 0 means use num_train_epochs." }),
  per_device_train_batch_size: intField({ group: "training", default: 8, min: 1, doc: "Training sequences per GPU per micro-step." }),
  per_device_eval_batch_size: intField({ group: "training", default: 8, min: 1, doc: "Evaluation sequences per GPU per step." }),
  gradient_accumulation_steps: intField({ group: "training", default: 1, min: 1, doc: "Micro-steps accumulated per optimizer step." }),
  learning_rate: floatField({ group: "training", default: 5e-5, min: 0, doc: "Peak learning rate." }),
  lr_scheduler_type: choiceField({
    group: "training",
    choices: ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"],
    default: "linear",
    doc: "Learning-rate schedule after warmup.",
  }),
  warmup_ratio: floatField({ group: "training", default: 0, min: 0, max: 1, doc: "Warmup length as a fraction of the total steps (transformers 4's name; 5 takes warmup_steps below 1)." }),
  warmup_steps: stepsField({
    group: "training",
    default: 0,
    zero: true,
    doc: "Warmup length in steps, or a fraction of the total steps when below 1 (transformers 5's form of warmup_ratio); overrides warmup_ratio when > 0.",
  }),
  weight_decay: floatField({ group: "training", default: 0, min: 0, doc: "AdamW decoupled weight decay." }),
  adam_beta1: floatField({ group: "training", default: 0.9, min: 0, max: 1, maxOpen: true, doc: "AdamW beta1." }),
  adam_beta2: floatField({ group: "training", default: 0.999, min: 0, max: 1, maxOpen: true, doc: "AdamW beta2." }),
  adam_epsilon: floatField({ group: "training", default: 1e-8, min: 0, doc: "AdamW epsilon." }),
  max_grad_norm: floatField({ group: "training", default: 1, min: 0, doc: "Clip the global gradient norm to this; 0 disables clipping." }),
  optim: choiceField({
    group: "training",
    choices: OPTIMIZERS,
    default: "adamw_torch",
    doc: "HF optimizer name; every one maps to tuna's AdamW (see notes).",
  }),
  bf16: boolField({ group: "training", default: false, doc: "bfloat16 mixed precision." }),
  fp16: boolField({ group: "training", default: false, doc: "float16 mixed precision." }),
  group_by_length: boolField({ group: "training", default: false, doc: "transformers 4's name for --train_sampling_strategy group_by_length." }),
  train_sampling_strategy: choiceField({
    group: "training",
    choices: ["random", "sequential", "group_by_length"],
    default: "random",
    doc:
      "Training order, as the HF Trainer's samplers: random (torch.randperm seeded with data_seed or seed, plus the epoch: the Trainer's own order), " +
      "sequential, group_by_length (megabatches of batch x accumulation steps sorted by length; the Trainer's order when nothing else draws random numbers, e.g. no dropout). batch_rebalance is not implemented.",
  }),
  data_seed: optionalIntField({ group: "training", min: 0, doc: "Seed of the random training order; default: seed. Initialization and dropout keep --seed." }),
  dataloader_drop_last: boolField({ group: "training", default: false, doc: "Do not train an epoch's last, smaller micro-batch." }),
  nan_inf_policy: choiceField({
    group: "training",
    choices: ["stop", "skip"],
    default: "stop",
    doc: "On a NaN/inf loss: stop with the step and its source rows, or skip that optimizer step.",
  }),
  gradient_checkpointing: boolField({ group: "training", default: false, doc: "Recompute activations in the backward pass to save memory." }),
  logging_strategy: choiceField({ group: "training", choices: STRATEGIES, default: "steps", doc: "When to log training metrics." }),
  logging_first_step: boolField({ group: "training", default: false, doc: "Also log after the first optimizer step." }),
  logging_steps: stepsField({ group: "training", default: 500, doc: "Log every N steps (with logging_strategy steps)." }),
  log_level: choiceField({
    group: "training",
    choices: ["debug", "info", "warning", "error", "critical", "passive"],
    default: "passive",
    doc: "Verbosity: debug also prints the configuration's non-default values at the start; passive = tuna's default.",
  }),
  eval_strategy: choiceField({
    group: "training",
    aliases: ["evaluation_strategy"],
    choices: STRATEGIES,
    default: "no",
    doc: "When to evaluate on the test split (old name: evaluation_strategy).",
  }),
  eval_steps: optionalStepsField({ group: "training", doc: "Evaluate every N steps; unset = logging_steps (as HF does)." }),
  save_strategy: choiceField({ group: "training", choices: STRATEGIES, default: "steps", doc: "When to write a checkpoint." }),
  save_steps: stepsField({ group: "training", default: 500, doc: "Checkpoint every N steps (with save_strategy steps)." }),
  save_total_limit: optionalIntField({ group: "training", min: 1, doc: "Keep at most this many checkpoints, deleting the oldest; unset = all." }),
  ddp_timeout: intField({
    group: "training",
    default: 60,
    min: 1,
    doc: "Seconds a rank waits for the others (rendezvous, each collective) before failing; HF's default is 1800.",
  }),
  ddp_bucket_cap_mb: optionalFloatField({
    group: "training",
    min: 0,
    minOpen: true,
    doc: "Data parallel: gradients are all-reduced in buckets of this many MiB, each as soon as its layers finish the backward; unset = 25 (torch DDP's).",
  }),
  neftune_noise_alpha: optionalFloatField({ group: "training", min: 0, minOpen: true, doc: "NEFTune: add uniform noise of this scale to input embeddings." }),
  report_to: listField({
    group: "training",
    default: ["none"],
    item: z.enum(REPORTERS),
    itemType: REPORTERS.join("|"),
    check: (items) => !(items.includes("none") && items.length > 1),
    doc: "Where metrics go besides the console: tensorboard (output_dir/runs), jsonl (metrics.jsonl), mlflow (MLflow's file store: ./mlruns or MLFLOW_TRACKING_URI); all = tensorboard and jsonl, and mlflow when MLFLOW_TRACKING_URI is set.",
  }),
  run_name: optionalTextField({ group: "training", doc: "The run's name for trackers (MLflow's run name); unset = output_dir's last folder." }),
  push_to_hub: boolField({ group: "training", default: false, doc: "Upload the output folder to the hub repo hub_model_id (HF_TOKEN: a write token), as the Trainer does." }),
  hub_model_id: optionalTextField({ group: "training", doc: "The hub repo to push to, as namespace/name (created when missing)." }),
  hub_private_repo: boolField({ group: "training", default: false, doc: "Create the hub repo private." }),
  hub_strategy: choiceField({
    group: "training",
    choices: ["every_save", "end", "checkpoint", "all_checkpoints"],
    default: "every_save",
    doc: "When to push: every_save (the model at each checkpoint, and at the end), end, checkpoint (also the latest checkpoint as last-checkpoint/), all_checkpoints (each checkpoint in its folder).",
  }),
  config_file: optionalTextField({ group: "training", doc: "accelerate config (YAML): processes, mixed precision, DeepSpeed/FSDP sharding." }),
  device: choiceField({ group: "training", choices: ["auto", "cpu", "cuda"], default: "auto", doc: "Where to train; auto = CUDA when available." }),

  // ---- dpo: preference training (tuna dpo), TRL's DPOConfig names and defaults
  beta: floatField({ group: "dpo", default: 0.1, min: 0, minOpen: true, doc: "How far the policy may move from the reference: the scale of the implicit reward." }),
  loss_type: listField({
    group: "dpo",
    default: ["sigmoid"],
    item: z.enum(DPO_LOSS_TYPES),
    itemType: DPO_LOSS_TYPES.join("|"),
    doc:
      "DPO loss, or a list of them summed with loss_weights (TRL 1.13; e.g. MPO's sigmoid,bco_pair,sft): sigmoid (DPO), ipo, hinge, robust, exo_pair, nca_pair, bco_pair, sppo_hard, apo_zero, apo_down, discopop, sigmoid_norm, " +
      "aot or aot_pair / aot_unpaired (sorted over each micro-batch), sft (the chosen completions' mean token NLL: RPO), as TRL computes them.",
  }),
  loss_weights: optionalNumberListField({ group: "dpo", doc: "The weight of each loss_type, in order; unset = 1 each." }),
  label_smoothing: floatField({ group: "dpo", default: 0, min: 0, max: 0.5, maxOpen: true, doc: "Assumed probability that a preference label is flipped (cDPO with sigmoid, robust DPO, AOT; EXO's epsilon); below 0.5." }),
  discopop_tau: floatField({ group: "dpo", default: 0.05, min: 0, minOpen: true, doc: "DiscoPOP's temperature: how sharply its loss moves from logistic to exponential (loss_type discopop)." }),
  max_prompt_length: optionalIntField({ group: "dpo", min: 1, doc: "Keep at most this many prompt tokens (the last ones); unset = no limit, as TRL 1.13 (which has only max_length; older TRL cut prompts to 512)." }),
  max_completion_length: optionalIntField({ group: "dpo", min: 1, doc: "Keep at most this many tokens of each completion (the first ones); unset = no limit (older TRL's name; TRL 1.13 has only max_length)." }),
  precompute_ref_log_probs: boolField({ group: "dpo", default: false, doc: "Compute the reference log-probabilities once before training instead of at every step." }),
  reference_free: boolField({ group: "dpo", default: false, doc: "No reference model: the reference log-probabilities are 0." }),
  rpo_alpha: optionalFloatField({ group: "dpo", min: 0, doc: "RPO: add rpo_alpha x the NLL loss of the chosen completions." }),
  ld_alpha: optionalFloatField({
    group: "dpo",
    min: 0,
    max: 1,
    doc: "LD-DPO: a completion's tokens beyond the shorter completion's length count ld_alpha times in its log-probability (TRL's ld_alpha); unset = plain DPO.",
  }),
  f_divergence_type: choiceField({
    group: "dpo",
    choices: ["reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"],
    default: "reverse_kl",
    doc: "f-DPO: the divergence whose f-score of the log-ratios the loss compares; reverse_kl is plain DPO. Others take sigmoid, sigmoid_norm, hinge, ipo, exo_pair, robust, discopop and sft only.",
  }),
  f_alpha_divergence_coef: floatField({ group: "dpo", default: 0.5, doc: "alpha of f_divergence_type alpha_divergence." }),
  disable_dropout: boolField({ group: "dpo", default: true, doc: "No dropout while preference training (TRL's default): lora_dropout counts as 0; false keeps it." }),

  // ---- tuna: flags of tuna itself
  config: optionalTextField({ group: "tuna", cliOnly: true, doc: "A tuna config file (YAML or JSON) holding any of these fields." }),
  print_config: boolField({ group: "tuna", default: false, doc: "Print the resolved configuration and exit." }),
};

type FieldValue<F> = F extends FieldSpec<infer T> ? T : never;

/** The resolved configuration of `tuna train`, keyed by the HF field names. */
export type TrainConfig = { [K in keyof typeof TRAIN_FIELDS]: FieldValue<(typeof TRAIN_FIELDS)[K]> };
export type FieldName = keyof TrainConfig;

export const FIELD_NAMES = Object.keys(TRAIN_FIELDS) as FieldName[];

export const GROUP_TITLES: Record<Group, string> = {
  model: "model arguments",
  data: "data arguments",
  training: "training arguments",
  dpo: "DPO arguments (tuna dpo; TRL's DPOConfig names)",
  tuna: "tuna options",
};

/** The spec of a field, seen through its value-agnostic interface. */
export function fieldSpec(name: FieldName): FieldSpec<unknown> {
  return TRAIN_FIELDS[name];
}

/** Every accepted name (field names and aliases) -> the field it sets. */
export const NAME_TO_FIELD: ReadonlyMap<string, FieldName> = new Map(
  FIELD_NAMES.flatMap((name) => [name, ...fieldSpec(name).aliases].map((n): [string, FieldName] => [n, name])),
);
