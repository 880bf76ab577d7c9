// Text generated from the schema: `tuna train --help` (every field grouped, with type, default, doc)
// and the resolved-configuration printout, which is valid YAML so it can be saved and reused as a config.
import YAML from "yaml";
import { describeLaunch } from "./accelerate.ts";
import { REQUIRED, type Group } from "./fields.ts";
import { PYTHON_NAMES } from "./python-names.ts";
import { FIELD_NAMES, GROUP_TITLES, OPTIMIZER_MAPPING, fieldSpec, type FieldName } from "./schema.ts";
import { describeSource } from "./problems.ts";
import type { ResolvedTrainConfig } from "./resolve.ts";

const GROUPS: readonly Group[] = ["model", "data", "training", "dpo", "tuna"];

/** A default as it would be typed on the command line: lists comma-joined. */
export function formatDefault(value: unknown): string {
  if (value === REQUIRED) return "required";
  if (value === undefined) return "unset";
  if (Array.isArray(value)) return value.map(formatDefault).join(",");
  if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") return String(value);
  return JSON.stringify(value);
}

function fieldsOf(group: Group): FieldName[] {
  return FIELD_NAMES.filter((name) => fieldSpec(name).group === group);
}

function helpNotes(): string[] {
  const optimizerWidth = Math.max(...Object.keys(OPTIMIZER_MAPPING).map((k) => k.length));
  return [
    "notes:",
    "  optim: tuna has one optimizer, AdamW with torch semantics; each HF name maps to it:",
    ...Object.entries(OPTIMIZER_MAPPING).map(([name, target]) => `    ${name.padEnd(optimizerWidth)} -> ${target}`),
    "  eval_steps: with eval_strategy steps and no eval_steps, evaluation runs every logging_steps (as HF does).",
    "  *_steps below 1 (e.g. 0.1) are a ratio of the total optimizer steps, as in HF.",
    "  config_file: an accelerate config (num_processes, mixed_precision, DEEPSPEED zero_stage/offload,",
    "    FSDP sharding strategy/offload, MULTI_GPU, NO); its other keys are ignored. Its mixed_precision must",
    "    not contradict --bf16/--fp16; mixed_precision 'no' is overridden by them, as the Trainer does.",
    "  report_to: all = tensorboard and jsonl.",
    "  use_unsloth is accepted but not supported; the command says so and stops.",
  ];
}

export function renderTrainHelp(): string {
  const lines = [
    "usage: tuna train [CONFIG.yaml | CONFIG.json] [--config PATH] [--FIELD VALUE ...]",
    "",
    "Fine-tunes a causal language model (LoRA, QLoRA) with the flags of the HF peft examples/sft train.py",
    "workflow, parsed like HfArgumentParser: --lora_r 8, --lora-r 8 and --lora_r=8 are the same; an",
    "unambiguous prefix works (--max_seq_len = --max_seq_length); a bool flag takes True/False, true/false,",
    "yes/no or 1/0, and alone means true. A config file (YAML or JSON) sets any field below by name.",
    "Precedence: defaults < config file < flags. --print_config shows the result and where each value came from.",
  ];
  for (const group of GROUPS) {
    lines.push("", `${GROUP_TITLES[group]}:`);
    for (const name of fieldsOf(group)) {
      const spec = fieldSpec(name);
      const names = [name, ...spec.aliases].map((n) => `--${n}`).join(", ");
      const shownDefault = spec.default === REQUIRED ? "(required)" : `(default: ${formatDefault(spec.default)})`;
      lines.push(`  ${names} ${spec.type}  ${shownDefault}`, `      ${spec.doc}`);
    }
  }
  lines.push("", ...pythonNamesHelp(), "", ...helpNotes());
  return lines.join("\n");
}

/** The Python stack's options that are not tuna fields: accepted and ignored, or refused, each with why. */
function pythonNamesHelp(): string[] {
  const entries = Object.entries(PYTHON_NAMES).sort(([a], [b]) => a.localeCompare(b));
  const width = Math.max(...entries.map(([name]) => name.length)) + 2;
  const section = (kind: "ignored" | "refused", title: string): string[] => [
    title,
    ...entries.filter(([, e]) => e.kind === kind).map(([name, e]) => `  --${name.padEnd(width)} ${e.why}`),
  ];
  return [
    ...section("ignored", "transformers / TRL / PEFT options accepted and ignored (a one-line notice says so):"),
    "",
    ...section("refused", "transformers / TRL / PEFT options refused (an error says why and what to use):"),
  ];
}

/**
 * docs/flags.md: every field with its type and default, then the Python stack's other options, ignored or
 * refused. Written by tools/docs/write-flags.ts; a test keeps the committed page equal to this.
 */
export function renderFlagsPage(): string {
  const cell = (text: string): string => text.replaceAll("|", "\\|");
  const lines = [
    "# tuna train / tuna dpo flags",
    "",
    "Generated from src/config/schema.ts and src/config/python-names.ts by `npx tsx tools/docs/write-flags.ts`;",
    "do not edit by hand. Every option of transformers' TrainingArguments, TRL's SFTConfig / DPOConfig and",
    "peft's examples/sft arguments that people pass is here: implemented, accepted and ignored, or refused.",
    "",
    "## Implemented",
    "",
    "| flag | type | default | what it does |",
    "| --- | --- | --- | --- |",
  ];
  for (const group of GROUPS) {
    for (const name of fieldsOf(group)) {
      const spec = fieldSpec(name);
      const names = [name, ...spec.aliases].map((n) => `\`--${n}\``).join(", ");
      const shown = spec.default === REQUIRED ? "required" : formatDefault(spec.default);
      lines.push(`| ${names} | ${cell(spec.type)} | ${cell(shown)} | ${cell(spec.doc)} |`);
    }
  }
  for (const [kind, title] of [["ignored", "Accepted and ignored (a notice says so)"], ["refused", "Refused (an error says why and what to use)"]] as const) {
    lines.push("", `## ${title}`, "", "| flag | why |", "| --- | --- |");
    for (const [name, e] of Object.entries(PYTHON_NAMES).sort(([a], [b]) => a.localeCompare(b))) {
      if (e.kind === kind) lines.push(`| \`--${name}\` | ${cell(e.why)} |`);
    }
  }
  return lines.join("\n") + "\n";
}

/** A value in YAML flow syntax: strings quoted only when YAML would read them as something else. */
function yamlValue(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(yamlValue).join(", ")}]`;
  return YAML.stringify(value, { lineWidth: 0 }).trimEnd();
}

/**
 * The resolved configuration as YAML: every field in help order, `# *` marking values that differ from
 * the default, and the source of every value that is not a default. Unset fields are commented out.
 */
export function formatResolvedConfig(resolved: ResolvedTrainConfig, options: { changedOnly?: boolean } = {}): string {
  const { config, sources } = resolved;
  const changedOnly = options.changedOnly ?? false;
  const lines = [
    changedOnly
      ? "# tuna train: configuration that differs from the defaults (--print_config shows every field)"
      : "# tuna train: resolved configuration (* = differs from the default)",
  ];
  let hidden = 0;
  if (resolved.configFile !== undefined) lines.push(`# config file: ${resolved.configFile}`);
  if (resolved.launch !== undefined) lines.push(`# accelerate config ${resolved.launch.source}: ${describeLaunch(resolved.launch)}`);
  const shownFields = FIELD_NAMES.filter((name) => fieldSpec(name).group !== "tuna");
  const width = Math.max(...shownFields.map((n) => n.length)) + 2;
  for (const group of GROUPS) {
    if (group === "tuna") continue;
    const groupLines: string[] = [];
    for (const name of fieldsOf(group)) {
      const value: unknown = config[name];
      const spec = fieldSpec(name);
      const differs = spec.default === REQUIRED || JSON.stringify(value) !== JSON.stringify(spec.default);
      if (changedOnly && !differs) {
        hidden++;
        continue;
      }
      const source = sources[name];
      const notes = [differs ? "*" : "", source.kind === "default" ? "" : describeSource(source)].filter((s) => s.length > 0);
      const comment = notes.length > 0 ? `  # ${notes.join(" ")}` : "";
      if (value === undefined) {
        groupLines.push(`${`# ${name}:`.padEnd(width)}(unset)${comment}`);
        continue;
      }
      const entry = `${`${name}:`.padEnd(width)}${yamlValue(value)}`;
      groupLines.push(comment.length > 0 ? `${entry.padEnd(width + 32)}${comment}` : entry);
    }
    if (groupLines.length > 0) lines.push("", `# ${GROUP_TITLES[group]}`, ...groupLines);
  }
  if (changedOnly) lines.push("", `# (${hidden} more fields at their defaults)`);
  return lines.join("\n");
}
