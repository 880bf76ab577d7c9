// The typed LoRA settings (PEFT LoraConfig's meaning, tuna's names), built from user options with
// every problem reported together; per-module rank, alpha and scaling; trainable token rows.
import { TunaError } from "../util/errors.ts";
import type { ModelConfig } from "../hf/config.ts";
import { patternValue, pythonRegex, resolveTargetModules, targetSpecFrom, type TargetModule, type TargetModulesSpec } from "./targets.ts";

/**
 * PEFT init_lora_weights. true: A ~ kaiming-uniform(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)), B = 0;
 * "gaussian": A ~ N(0, (1/r)^2), B = 0. false and "eva" are accepted when reading adapters (they
 * only differ at initialization); tuna initializes only true and "gaussian".
 */
export type InitLoraWeights = boolean | "gaussian" | "eva";

export type EmbeddingModule = "embed_tokens" | "lm_head";

/**
 * Trainable rows of the embedding matrices for added tokens: PEFT's trainable_token_indices. The
 * rows are full replacement rows (not deltas), saved as `<module>.token_adapter.trainable_tokens_delta`.
 * The list form trains rows of the input embedding only (a tied lm_head shares them); the dict form
 * names modules, so an untied model can also train its lm_head rows (needed to emit new tokens).
 */
export interface TrainableTokens {
  form: "list" | "dict";
  embedTokens: number[];
  /** Empty unless the dict form names lm_head (untied models only). */
  lmHead: number[];
}

export interface LoraSettings {
  r: number; // R
  alpha: number;
  dropout: number;
  /** target_modules as given, written back as PEFT writes it (all-linear as the resolved full names). */
  targetSpec: TargetModulesSpec;
  /** The adapted projections, resolved against the model, in model order. */
  targetModules: TargetModule[];
  excludeModules: TargetModulesSpec | null;
  layersToTransform: number[] | null;
  layersPattern: string[] | null;
  useRslora: boolean;
  /**
   * DoRA (PEFT use_dora): each adapted module's output is scaled per output feature by a trained magnitude
   * over the detached row norm of W + scale * B A (src/model/causal-lm/linear.ts).
   */
  useDora: boolean;
  bias: "none";
  taskType: "CAUSAL_LM";
  initLoraWeights: InitLoraWeights;
  /** rank_pattern / alpha_pattern entries in lookup order (first match wins). */
  rankPattern: [string, number][];
  alphaPattern: [string, number][];
  trainableTokens: TrainableTokens | null;
  /** Whole modules trained and saved beside the adapter (PEFT modules_to_save); tuna allows only the embeddings. */
  modulesToSave: EmbeddingModule[] | null;
  baseModelNameOrPath: string | null;
  revision: string | null;
}

export interface LoraOptions {
  r: number;
  alpha: number;
  dropout?: number;
  /** A list of names (short, full or dotted suffixes), a regex string, or "all-linear". */
  targetModules: string | readonly string[];
  excludeModules?: string | readonly string[] | null;
  layersToTransform?: readonly number[] | null;
  useRslora?: boolean;
  useDora?: boolean;
  initLoraWeights?: true | "gaussian";
  rankPattern?: Readonly<Record<string, number>> | null;
  alphaPattern?: Readonly<Record<string, number>> | null;
  /** A list (input embedding rows) or {"embed_tokens": [...], "lm_head": [...]}. */
  trainableTokenIndices?: readonly number[] | Readonly<Record<string, readonly number[]>> | null;
  baseModelNameOrPath?: string | null;
  revision?: string | null;
}

/** Validates the options and resolves the targets; CONFIG_INVALID lists every problem at once. */
export function makeLoraSettings(options: LoraOptions, cfg: ModelConfig, where = "LoRA settings"): LoraSettings {
  const problems: string[] = [];
  const dropout = options.dropout ?? 0;
  if (!Number.isSafeInteger(options.r) || options.r < 1) problems.push(`r must be a positive integer, got ${options.r}`);
  if (!Number.isFinite(options.alpha) || options.alpha <= 0) problems.push(`lora_alpha must be a positive number, got ${options.alpha}`);
  if (!(dropout >= 0 && dropout < 1)) problems.push(`lora_dropout must be in [0, 1), got ${dropout}`);
  const rankPattern = patternEntries(options.rankPattern, "rank_pattern", true, problems);
  const alphaPattern = patternEntries(options.alphaPattern, "alpha_pattern", false, problems);
  const layers = options.layersToTransform ?? null;
  for (const l of layers ?? []) {
    if (!Number.isSafeInteger(l) || l < 0 || l >= cfg.numLayers) problems.push(`layers_to_transform has ${l}, not a layer index in [0, ${cfg.numLayers})`);
  }
  const tokens = trainableTokensFrom(options.trainableTokenIndices ?? null, cfg, cfg.vocabSize, problems);
  if (problems.length > 0) {
    throw new TunaError("CONFIG_INVALID", `${where}: ${problems.length} problem(s):\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
  const targetSpec = targetSpecFrom(options.targetModules);
  const excludeModules = options.excludeModules == null ? null : targetSpecFrom(options.excludeModules);
  const resolved = resolveTargetModules(targetSpec, cfg, {
    exclude: excludeModules,
    layersToTransform: layers,
    strict: true,
    where: `${where}: target_modules`,
  });
  return {
    r: options.r,
    alpha: options.alpha,
    dropout,
    targetSpec,
    targetModules: resolved.modules,
    excludeModules,
    layersToTransform: layers === null ? null : [...layers],
    layersPattern: null,
    useRslora: options.useRslora ?? false,
    useDora: options.useDora ?? false,
    bias: "none",
    taskType: "CAUSAL_LM",
    initLoraWeights: options.initLoraWeights ?? true,
    rankPattern,
    alphaPattern,
    trainableTokens: tokens,
    modulesToSave: null,
    baseModelNameOrPath: options.baseModelNameOrPath ?? null,
    revision: options.revision ?? null,
  };
}

/** Checks a rank/alpha pattern dict: compilable keys and positive values (integers for ranks). */
export function patternEntries(
  pattern: Readonly<Record<string, unknown>> | null | undefined,
  field: string,
  integer: boolean,
  problems: string[],
): [string, number][] {
  const out: [string, number][] = [];
  for (const [key, value] of Object.entries(pattern ?? {})) {
    try {
      pythonRegex(`(.*\\.)?(${key})$`, "start", `${field} key`);
    } catch (e) {
      problems.push((e as Error).message);
      continue;
    }
    if (typeof value !== "number" || !(integer ? Number.isSafeInteger(value) && value >= 1 : Number.isFinite(value) && value > 0)) {
      problems.push(`${field}[${JSON.stringify(key)}] must be a positive ${integer ? "integer" : "number"}, got ${JSON.stringify(value)}`);
      continue;
    }
    out.push([key, value]);
  }
  return out;
}

/** Module-name suffix match, as PEFT matches modules_to_save and trainable_token_indices keys. */
export function embeddingModuleOf(name: string): EmbeddingModule | undefined {
  const full: Record<EmbeddingModule, string> = { embed_tokens: "model.embed_tokens", lm_head: "lm_head" };
  for (const m of ["embed_tokens", "lm_head"] as const) if (full[m] === name || full[m].endsWith(`.${name}`)) return m;
  return undefined;
}

/** Normalizes trainable_token_indices (list or dict form); `vocabSize` bounds the indices. */
export function trainableTokensFrom(
  value: readonly number[] | Readonly<Record<string, unknown>> | null,
  cfg: ModelConfig,
  vocabSize: number,
  problems: string[],
): TrainableTokens | null {
  if (value === null) return null;
  const checkIndices = (list: unknown, field: string): number[] => {
    if (!Array.isArray(list)) {
      problems.push(`${field} must be a list of token ids, got ${JSON.stringify(list)}`);
      return [];
    }
    const seen = new Set<number>();
    for (const id of list as unknown[]) {
      if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0 || id >= vocabSize) {
        problems.push(`${field} has ${JSON.stringify(id)}, not a token id in [0, ${vocabSize})`);
      } else if (seen.has(id)) {
        problems.push(`${field} lists token ${id} twice`);
      } else seen.add(id);
    }
    return list as number[];
  };
  if (Array.isArray(value)) return { form: "list", embedTokens: [...checkIndices(value, "trainable_token_indices")], lmHead: [] };
  const out: TrainableTokens = { form: "dict", embedTokens: [], lmHead: [] };
  for (const [key, list] of Object.entries(value)) {
    const field = `trainable_token_indices[${JSON.stringify(key)}]`;
    const module = embeddingModuleOf(key);
    if (module === undefined) {
      problems.push(`${field}: "${key}" is not an embedding module of this model (use "embed_tokens" or "lm_head")`);
    } else if (module === "lm_head" && cfg.tieWordEmbeddings) {
      problems.push(`${field}: lm_head is tied to embed_tokens in this model; list the rows under "embed_tokens" only`);
    } else {
      const indices = [...checkIndices(list, field)];
      if (module === "embed_tokens") out.embedTokens = indices;
      else out.lmHead = indices;
    }
  }
  return out;
}

/** The rank of one adapted module: its rank_pattern match, else r. */
export function moduleRank(settings: LoraSettings, moduleName: string): number {
  return patternValue(settings.rankPattern, moduleName) ?? settings.r;
}

/** lora_alpha of one module: its alpha_pattern match, else lora_alpha. */
export function moduleAlpha(settings: LoraSettings, moduleName: string): number {
  return patternValue(settings.alphaPattern, moduleName) ?? settings.alpha;
}

/** PEFT's scaling: alpha / r, or alpha / sqrt(r) with rsLoRA (per-module r and alpha). */
export function loraScaling(settings: LoraSettings, moduleName: string): number {
  const r = moduleRank(settings, moduleName);
  const alpha = moduleAlpha(settings, moduleName);
  return settings.useRslora ? alpha / Math.sqrt(r) : alpha / r;
}
