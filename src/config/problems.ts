// Where each configuration value came from, and the problems found while resolving one: collected
// (never thrown one by one) and turned into a single TunaError that lists them all.
import { TunaError } from "../util/errors.ts";
import type { FieldName } from "./schema.ts";

export type FieldSource =
  | { kind: "default" }
  | { kind: "file"; path: string; key: string }
  | { kind: "flag"; flag: string }
  /** The config file path given as the positional argument. */
  | { kind: "positional" }
  | { kind: "derived"; from: FieldName };

/** "default", "flag --lora_r", "file /abs/x.yaml", "derived from logging_steps". */
export function describeSource(source: FieldSource): string {
  switch (source.kind) {
    case "default":
      return "default";
    case "file":
      return `file ${source.path}`;
    case "flag":
      return `flag ${source.flag}`;
    case "positional":
      return "positional argument";
    case "derived":
      return `derived from ${source.from}`;
  }
}

export interface Problem {
  /** unknown: a flag or key tuna does not know; invalid: a bad value, a conflict or an unusable file. */
  kind: "unknown" | "invalid";
  message: string;
}

/** A value as the user wrote it: strings quoted so that empty or odd strings stay visible. */
export function showValue(value: unknown): string {
  if (value === undefined) return "(unset)";
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(showValue).join(", ")}]`;
  if (typeof value === "number" || typeof value === "boolean" || value === null) return String(value);
  return JSON.stringify(value);
}

/** `shown` is the value as the user wrote it (see showValue; a flag's text as typed). */
export function invalidValue(field: string, shown: string, expected: string, source: FieldSource): Problem {
  return { kind: "invalid", message: `${field} = ${shown} (${describeSource(source)}): expected ${expected}` };
}

/**
 * One error for all problems. CONFIG_UNKNOWN when every problem is an unknown flag or key (a typo),
 * CONFIG_INVALID otherwise.
 */
export function configError(problems: readonly Problem[]): TunaError {
  const code = problems.every((p) => p.kind === "unknown") ? "CONFIG_UNKNOWN" : "CONFIG_INVALID";
  const count = problems.length === 1 ? "1 problem" : `${problems.length} problems`;
  const lines = [`invalid train configuration (${count}):`, ...problems.map((p) => `  - ${p.message}`)];
  lines.push("Fix these and run again; `tuna train --help` lists every field with its type and default.");
  return new TunaError(code, lines.join("\n"));
}
