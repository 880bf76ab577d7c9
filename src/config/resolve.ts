// Resolves `tuna train` arguments into a validated TrainConfig: defaults < config file < flags, each
// value's source recorded, every problem (bad value, unknown name, conflict) reported in one error.
import { resolve } from "node:path";
import { isTunaError, type TunaError } from "../util/errors.ts";
import { FIELD_NAMES, fieldSpec, type FieldName, type TrainConfig } from "./schema.ts";
import { REQUIRED } from "./fields.ts";
import { scanArgs, type ScannedArgs } from "./argv.ts";
import { CONFIG_FILE_PATTERN, readTrainConfigFile } from "./file.ts";
import { readAccelerateConfig, type LaunchConfig } from "./accelerate.ts";
import { checkConflicts } from "./validate.ts";
import { configError, describeSource, invalidValue, showValue, type FieldSource, type Problem } from "./problems.ts";

export interface ResolvedTrainConfig {
  config: TrainConfig;
  sources: Record<FieldName, FieldSource>;
  /** From --config_file; undefined when no accelerate file was given. */
  launch: LaunchConfig | undefined;
  /** Absolute path of the tuna config file, when one was given. */
  configFile?: string;
  /** Python-stack options that were accepted and ignored: one line each, for the user. */
  notices: string[];
}

interface Candidate {
  value: unknown;
  /** The value as the user wrote it, for messages. */
  shown: string;
  source: FieldSource;
}

/** The config file: the one positional .yaml/.yml/.json argument, or --config. */
function chooseConfigFile(scanned: ScannedArgs, problems: Problem[]): { path: string; source: FieldSource } | undefined {
  const files: { path: string; source: FieldSource }[] = [];
  for (const arg of scanned.positionals) {
    if (CONFIG_FILE_PATTERN.test(arg)) files.push({ path: arg, source: { kind: "positional" } });
    else {
      problems.push({
        kind: "invalid",
        message: `unexpected argument ${JSON.stringify(arg)}: the only positional argument is a .yaml/.yml/.json config file (values need a --flag before them)`,
      });
    }
  }
  const flagged = scanned.assignments.filter((a) => a.field === "config").at(-1);
  if (flagged !== undefined) files.push({ path: flagged.raw, source: { kind: "flag", flag: flagged.flag } });
  if (files.length > 1) {
    problems.push({ kind: "invalid", message: `more than one config file given (${files.map((f) => f.path).join(", ")}); give one` });
    return undefined;
  }
  return files[0];
}

export async function parseTrainArgs(argv: string[], options: { cwd?: string } = {}): Promise<ResolvedTrainConfig> {
  const cwd = options.cwd ?? process.cwd();
  const scanned = scanArgs(argv);
  const problems: Problem[] = [...scanned.problems];
  const notices: string[] = [...scanned.notices];
  const candidates = new Map<FieldName, Candidate>();

  const chosen = chooseConfigFile(scanned, problems);
  let configFile: string | undefined;
  if (chosen !== undefined) {
    configFile = resolve(cwd, chosen.path);
    candidates.set("config", { value: chosen.path, shown: chosen.path, source: chosen.source });
    const content = await readTrainConfigFile(configFile);
    problems.push(...content.problems);
    notices.push(...content.notices);
    for (const entry of content.entries) {
      const source: FieldSource = { kind: "file", path: configFile, key: entry.key };
      // YAML null / JSON null means "unset": fine for optional fields, an error for the others.
      const value = entry.value === null ? undefined : fieldSpec(entry.field).fromFile(entry.value);
      candidates.set(entry.field, { value, shown: showValue(entry.value), source });
    }
  }
  for (const a of scanned.assignments) {
    if (a.field === "config") continue; // already handled by chooseConfigFile
    const shown = a.raw === "" ? '""' : a.raw;
    candidates.set(a.field, { value: fieldSpec(a.field).fromString(a.raw), shown, source: { kind: "flag", flag: a.flag } });
  }

  // Every field: the given value if valid, else the default (so later rules can still run).
  const values: Partial<Record<FieldName, unknown>> = {};
  const sources = {} as Record<FieldName, FieldSource>;
  const invalid = new Set<FieldName>();
  for (const name of FIELD_NAMES) {
    const spec = fieldSpec(name);
    const fallback = spec.default === REQUIRED ? undefined : structuredClone(spec.default);
    const given = candidates.get(name);
    if (given === undefined) {
      if (spec.default === REQUIRED) {
        problems.push(invalidValue(name, "(unset)", `${spec.type}; it is required: give --${name} or set it in the config file`, { kind: "default" }));
        invalid.add(name);
      }
      values[name] = fallback;
      sources[name] = { kind: "default" };
      continue;
    }
    sources[name] = given.source;
    const parsed = spec.schema.safeParse(given.value);
    if (parsed.success) values[name] = parsed.data;
    else {
      problems.push(invalidValue(name, given.shown, spec.type, given.source));
      invalid.add(name);
      values[name] = fallback;
    }
  }
  // Every field now holds a value its schema accepted (or its default, when the problem is reported).
  const config = values as TrainConfig;

  // HF TrainingArguments: eval_strategy steps without eval_steps evaluates every logging_steps.
  if (config.eval_strategy === "steps" && config.eval_steps === undefined) {
    config.eval_steps = config.logging_steps;
    sources.eval_steps = { kind: "derived", from: "logging_steps" };
  }

  let launch: LaunchConfig | undefined;
  let launchError: TunaError | undefined;
  if (config.config_file !== undefined && !invalid.has("config_file")) {
    try {
      launch = await readAccelerateConfig(resolve(cwd, config.config_file));
    } catch (e) {
      if (!isTunaError(e)) throw e;
      launchError = e;
      problems.push({ kind: "invalid", message: `config_file = ${config.config_file} (${describeSource(sources.config_file)}): ${e.message}` });
      invalid.add("config_file");
    }
  }

  const show = (f: FieldName): string => `${f} = ${showValue(config[f])} (${describeSource(sources[f])})`;
  for (const message of checkConflicts(config, launch, invalid, show)) problems.push({ kind: "invalid", message });

  // A missing or broken accelerate file alone keeps its own error code (FILE_NOT_FOUND, FILE_FORMAT...).
  if (launchError !== undefined && problems.length === 1) throw launchError;
  if (problems.length > 0) throw configError(problems);
  return configFile === undefined ? { config, sources, launch, notices } : { config, sources, launch, configFile, notices };
}
