// Scans `tuna train` arguments the way Python argparse does for HfArgumentParser: --name value,
// --name=value, dashed names, prefixes, bare booleans; collects problems instead of stopping at the first.
import { fieldSpec, type FieldName } from "./schema.ts";
import { lookupFlag, normalizeFlagName, pythonName, pythonNameMessage, unknownNameHint } from "./names.ts";
import { parseBoolWord } from "./fields.ts";
import type { Problem } from "./problems.ts";

export interface FlagAssignment {
  field: FieldName;
  /** The value as typed; a bare boolean flag gives "true". */
  raw: string;
  /** The flag as typed, without its value: "--max_seq_len". */
  flag: string;
}

export interface ScannedArgs {
  /** In command-line order; a later assignment of the same field wins. */
  assignments: FlagAssignment[];
  positionals: string[];
  problems: Problem[];
  /** Python-stack flags accepted and ignored, one line each. */
  notices: string[];
}

// argparse treats "-1" or "-.5" as a value, not an option, when no option looks like a number.
const NEGATIVE_NUMBER = /^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

const CONFIG_PATH = /\.(ya?ml|json)$/i;

function looksLikeFlag(token: string): boolean {
  return token.startsWith("-") && token !== "-" && !NEGATIVE_NUMBER.test(token);
}

export function scanArgs(argv: readonly string[]): ScannedArgs {
  const result: ScannedArgs = { assignments: [], positionals: [], problems: [], notices: [] };
  let onlyPositionals = false;
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i] ?? "";
    if (onlyPositionals || !looksLikeFlag(token)) {
      result.positionals.push(token);
      continue;
    }
    if (token === "--") {
      onlyPositionals = true;
      continue;
    }
    const eq = token.indexOf("=");
    const flag = eq >= 0 ? token.slice(0, eq) : token;
    const inlineValue = eq >= 0 ? token.slice(eq + 1) : undefined;
    const next = argv[i + 1];
    const nextIsValue = next !== undefined && !looksLikeFlag(next);
    const lookup = flag.startsWith("--") ? lookupFlag(normalizeFlagName(flag)) : { kind: "unknown" as const };
    const python = lookup.kind === "unknown" && flag.startsWith("--") ? pythonName(normalizeFlagName(flag)) : undefined;
    if (python !== undefined) {
      const name = normalizeFlagName(flag);
      // Its value goes with it: the next token for a valued flag, a bool word for a bool one.
      if (inlineValue === undefined && nextIsValue && (python.takes === "value" || parseBoolWord(next) !== undefined)) i++;
      if (python.kind === "ignored") result.notices.push(pythonNameMessage(name, "--", python));
      else result.problems.push({ kind: "invalid", message: pythonNameMessage(name, "--", python) });
      continue;
    }
    if (lookup.kind !== "field") {
      const name = normalizeFlagName(flag);
      const message =
        lookup.kind === "ambiguous"
          ? `ambiguous flag ${flag}: it could be ${lookup.candidates.map((c) => `--${c}`).join(", ")}; type more of the name`
          : `unknown flag ${flag}: ${unknownNameHint(name, "--")}`;
      result.problems.push({ kind: lookup.kind === "ambiguous" ? "invalid" : "unknown", message });
      // Skip the unknown flag's value too, so it is not mistaken for a positional argument.
      if (inlineValue === undefined && nextIsValue) i++;
      continue;
    }
    const spec = fieldSpec(lookup.field);
    if (inlineValue !== undefined) {
      result.assignments.push({ field: lookup.field, raw: inlineValue, flag });
    } else if (spec.isBool && !nextIsValue) {
      result.assignments.push({ field: lookup.field, raw: "true", flag });
    } else if (nextIsValue) {
      // argparse gives a boolean flag the next non-flag token even when it is not a boolean word.
      i++;
      if (spec.isBool && parseBoolWord(next) === undefined && CONFIG_PATH.test(next)) {
        result.problems.push({
          kind: "invalid",
          message: `${flag} took ${JSON.stringify(next)} as its value but expects a bool; to pass a config file, put it first or use --config`,
        });
      } else {
        result.assignments.push({ field: lookup.field, raw: next, flag });
      }
    } else {
      result.problems.push({ kind: "invalid", message: `${flag} expects a value (${spec.type}) but none was given` });
    }
  }
  return result;
}
