// Reads a tuna config file (YAML or JSON, one flat mapping of field names to values), as
// HfArgumentParser.parse_yaml_file/parse_json_file do; unknown keys are problems that name the file.
import { readFile } from "node:fs/promises";
import YAML from "yaml";
import { TunaError, errorMessage } from "../util/errors.ts";
import { fieldSpec, type FieldName } from "./schema.ts";
import { lookupKey, pythonName, pythonNameMessage, unknownNameHint } from "./names.ts";
import type { Problem } from "./problems.ts";

export interface FileEntry {
  field: FieldName;
  /** The key as written (a field name or an alias). */
  key: string;
  value: unknown;
}

export interface ConfigFileContent {
  entries: FileEntry[];
  problems: Problem[];
  /** Python-stack keys accepted and ignored, one line each. */
  notices: string[];
}

export const CONFIG_FILE_PATTERN = /\.(ya?ml|json)$/i;

/** Reads a file, turning a missing one into FILE_NOT_FOUND; `what` names it in the message. */
export async function readTextFile(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw new TunaError("FILE_NOT_FOUND", `${what} ${path} does not exist; check the path.`, { cause: e });
    }
    throw new TunaError("FILE_FORMAT", `cannot read ${what} ${path}: ${errorMessage(e)}`, { cause: e });
  }
}

/** Parses YAML (or JSON, by extension) into a plain mapping; an empty file is an empty mapping. */
export function parseMapping(text: string, path: string, what: string): Record<string, unknown> {
  let data: unknown;
  try {
    data = /\.json$/i.test(path) ? JSON.parse(text) : YAML.parse(text);
  } catch (e) {
    throw new TunaError("FILE_FORMAT", `${what} ${path} is not valid ${/\.json$/i.test(path) ? "JSON" : "YAML"}: ${errorMessage(e)}`, {
      cause: e,
    });
  }
  if (data === null || data === undefined) return {};
  if (typeof data !== "object" || Array.isArray(data)) {
    throw new TunaError("FILE_FORMAT", `${what} ${path} must hold a mapping of names to values, not ${Array.isArray(data) ? "a list" : typeof data}.`);
  }
  return data as Record<string, unknown>;
}

export async function readTrainConfigFile(path: string): Promise<ConfigFileContent> {
  const mapping = parseMapping(await readTextFile(path, "config file"), path, "config file");
  const content: ConfigFileContent = { entries: [], problems: [], notices: [] };
  const keyOfField = new Map<FieldName, string>();
  for (const [key, value] of Object.entries(mapping)) {
    const field = lookupKey(key);
    const python = field === undefined ? pythonName(key) : undefined;
    if (python !== undefined) {
      if (python.kind === "ignored") content.notices.push(`${path}: ${pythonNameMessage(key, "", python)}`);
      else content.problems.push({ kind: "invalid", message: `key ${JSON.stringify(key)} in file ${path}: ${pythonNameMessage(key, "", python)}` });
      continue;
    }
    if (field === undefined) {
      content.problems.push({ kind: "unknown", message: `unknown key ${JSON.stringify(key)} in file ${path}: ${unknownNameHint(key, "")}` });
      continue;
    }
    if (fieldSpec(field).cliOnly) {
      content.problems.push({ kind: "invalid", message: `key ${JSON.stringify(key)} in file ${path} is only accepted as a command-line flag` });
      continue;
    }
    const earlier = keyOfField.get(field);
    if (earlier !== undefined) {
      content.problems.push({
        kind: "invalid",
        message: `file ${path} sets ${field} twice (keys ${JSON.stringify(earlier)} and ${JSON.stringify(key)} are the same field); keep one`,
      });
      continue;
    }
    keyOfField.set(field, key);
    content.entries.push({ field, key, value });
  }
  return content;
}
