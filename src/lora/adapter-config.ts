// adapter_config.json: the exact text PEFT 0.21.0's LoraConfig.save_pretrained writes, and the reader
// of configs from any PEFT version (unknown keys ignored, features tuna lacks refused by name).
import { TunaError } from "../util/errors.ts";
import type { ModelConfig } from "../hf/config.ts";
import { PyFloat, compareCodePoints, pythonJsonDumps, type PyJson } from "./python-format.ts";
import {
  embeddingModuleOf,
  patternEntries,
  trainableTokensFrom,
  type EmbeddingModule,
  type InitLoraWeights,
  type LoraSettings,
} from "./settings.ts";
import { resolveTargetModules, targetSpecFrom, type TargetModulesSpec } from "./targets.ts";

export const ADAPTER_CONFIG_FILE = "adapter_config.json";
/** The PEFT release whose field set and defaults the writer reproduces (checked against its output). */
export const PEFT_FORMAT_VERSION = "0.21.0";
/** PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING for llama, mistral and qwen2. */
const DEFAULT_TARGETS = ["q_proj", "v_proj"];

function specJson(spec: TargetModulesSpec, resolvedNames: readonly string[]): PyJson {
  if (spec.kind === "regex") return spec.pattern;
  // PEFT >= 0.14 writes all-linear back as the full names it resolved to; set order is arbitrary, tuna sorts.
  const names = spec.kind === "all-linear" ? resolvedNames : spec.names;
  return [...new Set(names)].sort(compareCodePoints);
}

function patternJson(entries: readonly (readonly [string, number])[]): PyJson {
  return Object.fromEntries(entries.map(([k, v]) => [k, Number.isInteger(v) ? v : new PyFloat(v)]));
}

/** Every field of PEFT 0.21.0's LoraConfig, as save_pretrained serializes it (inference_mode true). */
export function adapterConfigJson(settings: LoraSettings): { [key: string]: PyJson } {
  const tokens = settings.trainableTokens;
  let tokenJson: PyJson = null;
  if (tokens !== null) {
    tokenJson =
      tokens.form === "list"
        ? tokens.embedTokens
        : Object.fromEntries(
            (
              [
                ["embed_tokens", tokens.embedTokens],
                ["lm_head", tokens.lmHead],
              ] as const
            ).filter(([, ids]) => ids.length > 0),
          );
  }
  const layersPattern = settings.layersPattern;
  return {
    alora_invocation_tokens: null,
    alpha_pattern: patternJson(settings.alphaPattern),
    arrow_config: null,
    auto_mapping: null,
    base_model_name_or_path: settings.baseModelNameOrPath,
    bias: settings.bias,
    corda_config: null,
    ensure_weight_tying: false,
    eva_config: null,
    exclude_modules: settings.excludeModules === null ? null : specJson(settings.excludeModules, []),
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: settings.initLoraWeights,
    kasa_config: null,
    layer_replication: null,
    layers_pattern: layersPattern === null ? null : layersPattern.length === 1 ? (layersPattern[0] ?? null) : layersPattern,
    layers_to_transform: settings.layersToTransform,
    loftq_config: {},
    lora_alpha: Number.isInteger(settings.alpha) ? settings.alpha : new PyFloat(settings.alpha),
    lora_bias: false,
    // A float field: PEFT writes 0.0 for no dropout.
    lora_dropout: new PyFloat(settings.dropout),
    lora_ga_config: null,
    megatron_config: null,
    megatron_core: "megatron.core",
    modules_to_save: settings.modulesToSave,
    monteclora_config: null,
    peft_type: "LORA",
    peft_version: PEFT_FORMAT_VERSION,
    qalora_group_size: 16,
    r: settings.r,
    rank_pattern: patternJson(settings.rankPattern),
    revision: settings.revision,
    target_modules: specJson(
      settings.targetSpec,
      settings.targetModules.map((m) => m.name),
    ),
    target_parameters: null,
    task_type: settings.taskType,
    trainable_token_indices: tokenJson,
    use_bdlora: null,
    use_dora: settings.useDora,
    use_qalora: false,
    use_rslora: settings.useRslora,
    velora_config: null,
  };
}

/** The file's text: json.dumps(indent=2, sort_keys=True), no trailing newline. */
export function serializeAdapterConfig(settings: LoraSettings): string {
  return pythonJsonDumps(adapterConfigJson(settings));
}

/** Variant features that change the math or the saved tensors, refused when set (key: why). */
const UNSUPPORTED_WHEN_SET: Record<string, string> = {
  lora_bias: "a bias on lora_B",
  use_qalora: "QA-LoRA",
  layer_replication: "layer replication",
  megatron_config: "Megatron parallel layers",
  target_parameters: "LoRA on nn.Parameter targets",
  alora_invocation_tokens: "activated LoRA",
  arrow_config: "Arrow routing",
  kasa_config: "KaSA",
  velora_config: "VeLoRA",
  monteclora_config: "MonteCLoRA",
  use_bdlora: "BD-LoRA",
};

/** Init modes that leave the base weights untouched; the others (pissa, olora, corda, loftq, ...) change them. */
const READABLE_INITS = new Set<unknown>([true, false, "gaussian", "eva"]);

function isSet(value: unknown): boolean {
  return value !== null && value !== undefined && value !== false && !(Array.isArray(value) && value.length === 0);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function stringOrList(value: unknown, field: string, problems: string[]): string | string[] | null {
  if (value === null || value === undefined) return null;
  if (typeof value === "string") return value;
  if (Array.isArray(value) && value.every((v): v is string => typeof v === "string")) return value;
  problems.push(`${field} must be a string, a list of strings or null, got ${JSON.stringify(value)}`);
  return null;
}

/**
 * Turns adapter_config.json content into settings for `cfg`: FILE_FORMAT lists every malformed
 * field, UNSUPPORTED names features tuna lacks, MODEL_INVALID says the targets do not fit the model.
 * `vocabSize` bounds trainable token ids (the adapter's own vocabulary when it saved resized embeddings).
 */
export function settingsFromAdapterConfig(json: unknown, cfg: ModelConfig, where: string, vocabSize = cfg.vocabSize): LoraSettings {
  if (!isRecord(json)) throw new TunaError("FILE_FORMAT", `${where}: expected a JSON object, got ${Array.isArray(json) ? "an array" : typeof json}.`);
  const problems: string[] = [];
  const unsupported: string[] = [];
  const get = (k: string): unknown => json[k];

  const peftType = get("peft_type");
  if (peftType !== "LORA") unsupported.push(`peft_type ${JSON.stringify(peftType)} (tuna reads LORA adapters)`);
  const taskType = get("task_type");
  if (taskType !== undefined && taskType !== null && taskType !== "CAUSAL_LM") unsupported.push(`task_type ${JSON.stringify(taskType)} (tuna trains CAUSAL_LM)`);
  const num = (k: string, fallback: number, check: (v: number) => boolean, what: string): number => {
    const v = get(k);
    if (v === undefined || v === null) return fallback;
    if (typeof v === "number" && check(v)) return v;
    problems.push(`${k} must be ${what}, got ${JSON.stringify(v)}`);
    return fallback;
  };
  const r = num("r", 8, (v) => Number.isSafeInteger(v) && v >= 1, "a positive integer");
  const alpha = num("lora_alpha", 8, (v) => Number.isFinite(v) && v > 0, "a positive number");
  const dropout = num("lora_dropout", 0, (v) => v >= 0 && v < 1, "a number in [0, 1)");
  const bool = (k: string): boolean => {
    const v = get(k);
    if (v === undefined || v === null || typeof v === "boolean") return v === true;
    problems.push(`${k} must be true or false, got ${JSON.stringify(v)}`);
    return false;
  };
  const useRslora = bool("use_rslora");
  const useDora = bool("use_dora");
  bool("fan_in_fan_out"); // PEFT resets it to false for nn.Linear targets, so it changes nothing here.
  const bias = get("bias") ?? "none";
  if (bias === "all" || bias === "lora_only") unsupported.push(`bias "${bias}" (saves base-layer biases; tuna supports "none")`);
  else if (bias !== "none") problems.push(`bias must be "none", "all" or "lora_only", got ${JSON.stringify(bias)}`);
  const init = get("init_lora_weights") ?? true;
  if (typeof init !== "boolean" && typeof init !== "string") problems.push(`init_lora_weights must be a boolean or a string, got ${JSON.stringify(init)}`);
  else if (!READABLE_INITS.has(init)) unsupported.push(`init_lora_weights "${String(init)}" (it changes the base weights, so the adapter needs its residual model)`);
  for (const [k, what] of Object.entries(UNSUPPORTED_WHEN_SET)) if (isSet(get(k))) unsupported.push(`${k} = ${JSON.stringify(get(k))} (${what})`);

  const targets = stringOrList(get("target_modules"), "target_modules", problems) ?? DEFAULT_TARGETS;
  const excludeRaw = stringOrList(get("exclude_modules"), "exclude_modules", problems);
  const layersPatternRaw = stringOrList(get("layers_pattern"), "layers_pattern", problems);
  let layersToTransform: number[] | null = null;
  const ltt = get("layers_to_transform");
  if (typeof ltt === "number" && Number.isSafeInteger(ltt)) layersToTransform = [ltt];
  else if (Array.isArray(ltt) && ltt.every((v) => Number.isSafeInteger(v))) layersToTransform = ltt as number[];
  else if (ltt !== null && ltt !== undefined) problems.push(`layers_to_transform must be an integer, a list of integers or null, got ${JSON.stringify(ltt)}`);

  const pattern = (k: string, integer: boolean): [string, number][] => {
    const v = get(k);
    if (v === null || v === undefined) return [];
    if (!isRecord(v)) {
      problems.push(`${k} must be an object, got ${JSON.stringify(v)}`);
      return [];
    }
    // PEFT writes sort_keys=True and json.load keeps file order, so sorted order is PEFT's lookup order.
    const sorted = Object.fromEntries(Object.entries(v).sort(([a], [b]) => compareCodePoints(a, b)));
    return patternEntries(sorted, k, integer, problems);
  };
  const rankPattern = pattern("rank_pattern", true);
  const alphaPattern = pattern("alpha_pattern", false);

  let modulesToSave: EmbeddingModule[] | null = null;
  const mts = stringOrList(get("modules_to_save"), "modules_to_save", problems);
  if (mts !== null) {
    modulesToSave = [];
    for (const name of typeof mts === "string" ? [mts] : mts) {
      const m = embeddingModuleOf(name);
      if (m === undefined) unsupported.push(`modules_to_save entry "${name}" (tuna saves only embed_tokens and lm_head whole)`);
      else if (!modulesToSave.includes(m)) modulesToSave.push(m);
    }
  }
  const tokensRaw = get("trainable_token_indices");
  let tokens = null;
  if (tokensRaw !== null && tokensRaw !== undefined) {
    if (Array.isArray(tokensRaw) || isRecord(tokensRaw)) tokens = trainableTokensFrom(tokensRaw as number[] | Record<string, unknown>, cfg, vocabSize, problems);
    else problems.push(`trainable_token_indices must be a list or an object, got ${JSON.stringify(tokensRaw)}`);
  }
  const text = (k: string): string | null => {
    const v = get(k);
    if (v === undefined || v === null || typeof v === "string") return v ?? null;
    problems.push(`${k} must be a string or null, got ${JSON.stringify(v)}`);
    return null;
  };
  const baseModelNameOrPath = text("base_model_name_or_path");
  const revision = text("revision");

  if (problems.length > 0) {
    throw new TunaError("FILE_FORMAT", `${where}: ${problems.length} invalid field(s):\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
  if (unsupported.length > 0) {
    throw new TunaError("UNSUPPORTED", `${where} uses what tuna does not support:\n${unsupported.map((p) => `  - ${p}`).join("\n")}`);
  }
  const targetSpec = targetSpecFrom(targets);
  const excludeModules = excludeRaw === null ? null : targetSpecFrom(excludeRaw);
  const layersPattern = layersPatternRaw === null ? null : typeof layersPatternRaw === "string" ? [layersPatternRaw] : layersPatternRaw;
  let resolved;
  try {
    resolved = resolveTargetModules(targetSpec, cfg, { exclude: excludeModules, layersToTransform, layersPattern, where: `${where}: target_modules` });
  } catch (e) {
    if (e instanceof TunaError && e.code === "CONFIG_INVALID") {
      throw new TunaError("MODEL_INVALID", `the adapter does not fit this model: ${e.message}`, { cause: e });
    }
    throw e;
  }
  return {
    r,
    alpha,
    dropout,
    targetSpec,
    targetModules: resolved.modules,
    excludeModules,
    layersToTransform,
    layersPattern,
    useRslora,
    useDora,
    bias: "none",
    taskType: "CAUSAL_LM",
    initLoraWeights: init as InitLoraWeights,
    rankPattern,
    alphaPattern,
    trainableTokens: tokens,
    modulesToSave,
    baseModelNameOrPath,
    revision,
  };
}
