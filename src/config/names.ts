// Turning what the user typed into a field: exact names and aliases, dash/underscore spellings,
// argparse-style unambiguous prefixes (flags only), and the "did you mean" message for unknown names.
import { NAME_TO_FIELD, type FieldName } from "./schema.ts";
import { nearestName } from "./suggest.ts";
import { PYTHON_NAMES, type PythonName } from "./python-names.ts";

export type FlagLookup =
  | { kind: "field"; field: FieldName }
  | { kind: "ambiguous"; candidates: string[] }
  | { kind: "unknown" };

const KNOWN_NAMES = [...NAME_TO_FIELD.keys()];

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

/** A Python-stack name tuna knows but does not implement as a field (ignored with a notice, or refused). */
export function pythonName(name: string): PythonName | undefined {
  return Object.hasOwn(PYTHON_NAMES, name) ? PYTHON_NAMES[name] : undefined;
}

/** The notice for an ignored Python-stack name, or the error for a refused one. */
export function pythonNameMessage(name: string, prefix: string, entry: PythonName): string {
  return entry.kind === "ignored" ? `${prefix}${name} is ignored: ${entry.why}.` : `${prefix}${name} is a transformers/TRL/PEFT option tuna does not take: ${entry.why}.`;
}

/** Why `name` is unknown and what to type instead; `prefix` is "--" for flags, "" for file keys. */
export function unknownNameHint(name: string, prefix: string): string {
  const nearest = nearestName(name, KNOWN_NAMES);
  return nearest === undefined ? "see `tuna train --help` for the known fields" : `did you mean ${prefix}${nearest}?`;
}
