// Turning what the user typed into a field: exact names and aliases, dash/underscore spellings,
// argparse-style unambiguous prefixes (flags only), and the "did you mean" message for unknown names.
import { NAME_TO_FIELD, type FieldName } from "./schema.ts";
import { nearestName } from "./suggest.ts";

export type FlagLookup =
  | { kind: "field"; field: FieldName }
  | { kind: "ambiguous"; candidates: string[] }
  | { kind: "unknown" };

const KNOWN_NAMES = [...NAME_TO_FIELD.keys()];

/**
 * TrainingArguments/SFTConfig flags users carry over from Python that tuna does not implement, so the
 * error says so instead of suggesting a look-alike field.
 */
const HF_NAMES_NOT_IN_TUNA = new Set([
  "do_train",
  "do_eval",
  "deepspeed",
  "fsdp",
  "fsdp_config",
  "ddp_find_unused_parameters",
  "gradient_checkpointing_kwargs",
  "dataloader_num_workers",
  "load_best_model_at_end",
  "hub_model_id",
  "hub_private_repo",
  "hub_strategy",
  "torch_dtype",
  "attn_implementation",
  "tf32",
  "group_by_length",
  "remove_unused_columns",
  "run_name",
  "logging_dir",
  "logging_first_step",
  "lr_scheduler_kwargs",
  "dataset_kwargs",
  "use_cpu",
]);

/** Flag name without its dashes, dashes inside the name read as underscores (--lora-r = --lora_r). */
export function normalizeFlagName(flag: string): string {
  return flag.replace(/^--?/, "").replaceAll("-", "_");
}

/**
 * The field a flag name sets. An exact name or alias always wins; otherwise a prefix of exactly one
 * field's names is accepted, as argparse's allow_abbrev does (--max_seq_len -> max_seq_length).
 */
export function lookupFlag(name: string): FlagLookup {
  const exact = NAME_TO_FIELD.get(name);
  if (exact !== undefined) return { kind: "field", field: exact };
  if (name.length === 0) return { kind: "unknown" };
  const matches = KNOWN_NAMES.filter((known) => known.startsWith(name));
  const fields = new Set(matches.map((m) => NAME_TO_FIELD.get(m)));
  const [only] = fields;
  if (fields.size === 1 && only !== undefined) return { kind: "field", field: only };
  if (fields.size > 1) return { kind: "ambiguous", candidates: matches };
  return { kind: "unknown" };
}

/** The field a config-file key sets: exact names and aliases only, as HfArgumentParser.parse_dict. */
export function lookupKey(key: string): FieldName | undefined {
  return NAME_TO_FIELD.get(key);
}

/** Why `name` is unknown and what to type instead; `prefix` is "--" for flags, "" for file keys. */
export function unknownNameHint(name: string, prefix: string): string {
  if (HF_NAMES_NOT_IN_TUNA.has(name)) {
    return `${prefix}${name} is a transformers/TRL option that tuna does not implement; remove it`;
  }
  const nearest = nearestName(name, KNOWN_NAMES);
  return nearest === undefined ? "see `tuna train --help` for the known fields" : `did you mean ${prefix}${nearest}?`;
}
