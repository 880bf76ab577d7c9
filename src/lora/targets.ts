// Which modules of a decoder get LoRA: PEFT's target_modules matching (regex string, name list,
// all-linear), exclude_modules, layers_to_transform, and its rank_pattern / alpha_pattern lookup.
import { TunaError } from "../util/errors.ts";
import type { ModelConfig } from "../hf/config.ts";
import { linearModules, linearPrefix, type LinearName } from "../hf/weights.ts";

/** What the user or adapter_config.json asked for, kept so it can be written back the way PEFT does. */
export type TargetModulesSpec =
  | { kind: "all-linear" }
  /** A str target_modules other than all-linear: re.fullmatch against each full module name. */
  | { kind: "regex"; pattern: string }
  /** A list (a set in PEFT): a module matches when its name equals an entry or ends with "." + entry. */
  | { kind: "names"; names: string[] };

/** Filters applied with the targets (PEFT LoraConfig fields of the same names). */
export interface TargetFilters {
  /** exclude_modules: regex string or name list (same matching as targets). */
  exclude?: TargetModulesSpec | null;
  /** layers_to_transform: only these layer indices (list and all-linear forms only, as in PEFT). */
  layersToTransform?: readonly number[] | null;
  /** layers_pattern: the ModuleList name(s) the layer index follows; default: any. */
  layersPattern?: readonly string[] | null;
}

/** One adapted linear module. */
export interface TargetModule {
  /** Full module name relative to the CausalLM, e.g. "model.layers.0.self_attn.q_proj". */
  name: string;
  layer: number;
  /** The module's name in its layer (a projection, or Phi-3's fused qkv_proj / gate_up_proj). */
  linear: LinearName;
}

export interface ResolvedTargets {
  /** In model order: layer by layer, the family's linear modules in HF order. */
  modules: TargetModule[];
  /** For each layer, the linear modules that get LoRA. */
  byLayer: LinearName[][];
}

type ModuleRole = { role: "projection"; layer: number; linear: LinearName } | { role: "lm_head" | "embed_tokens" | "other" };

/** Every named module of a supported CausalLM (torch named_modules(), root excluded). */
export function modelModuleNames(cfg: ModelConfig): Map<string, ModuleRole> {
  const out = new Map<string, ModuleRole>();
  const other = { role: "other" } as const;
  out.set("model", other);
  out.set("model.embed_tokens", { role: "embed_tokens" });
  out.set("model.layers", other);
  for (let l = 0; l < cfg.numLayers; l++) {
    const layer = `model.layers.${l}`;
    out.set(layer, other);
    out.set(`${layer}.self_attn`, other);
    out.set(`${layer}.mlp`, other);
    for (const m of linearModules(cfg)) out.set(linearPrefix(l, m), { role: "projection", layer: l, linear: m.name });
    if (cfg.qkNorm) for (const n of ["q_norm", "k_norm"]) out.set(`${layer}.self_attn.${n}`, other);
    out.set(`${layer}.mlp.act_fn`, other);
    out.set(`${layer}.input_layernorm`, other);
    out.set(`${layer}.post_attention_layernorm`, other);
    if (cfg.sandwichNorms) for (const n of ["pre_feedforward_layernorm", "post_feedforward_layernorm"]) out.set(`${layer}.${n}`, other);
  }
  out.set("model.norm", other);
  out.set("model.rotary_emb", other);
  out.set("lm_head", { role: "lm_head" });
  return out;
}

/** A str target_modules: "all-linear" (any case) or a regex; a list: names. */
export function targetSpecFrom(value: string | readonly string[]): TargetModulesSpec {
  if (typeof value === "string") return value.toLowerCase() === "all-linear" ? { kind: "all-linear" } : { kind: "regex", pattern: value };
  return { kind: "names", names: [...value] };
}

/** Python `re` syntax that JavaScript spells differently: named groups and \A, \Z anchors. */
export function pythonRegex(pattern: string, anchored: "full" | "start", where: string): RegExp {
  const js = pattern.replace(/\(\?P</g, "(?<").replace(/\(\?P=(\w+)\)/g, "\\k<$1>").replace(/\\A/g, "^").replace(/\\Z/g, "$");
  try {
    return new RegExp(anchored === "full" ? `^(?:${js})$` : `^(?:${js})`);
  } catch (e) {
    throw new TunaError("CONFIG_INVALID", `${where}: ${JSON.stringify(pattern)} is not a valid regular expression (${(e as Error).message}).`);
  }
}

/** check_target_module_exists for one key; `names` entries match exactly or as a dotted suffix. */
function matches(spec: TargetModulesSpec, key: string, regex: RegExp | null): boolean {
  if (spec.kind === "regex") return regex?.test(key) ?? false;
  if (spec.kind === "all-linear") return false;
  return spec.names.some((t) => key === t || key.endsWith(`.${t}`));
}

function layerIndexOf(key: string, patterns: readonly string[] | null | undefined): number | undefined {
  const res = patterns == null || patterns.length === 0 ? [/^.*?\.[^.]*\.(\d+)\./] : patterns.map((p) => new RegExp(`^.*\\.${p}\\.(\\d+)\\.`));
  for (const re of res) {
    const m = re.exec(key);
    if (m?.[1] !== undefined) return Number(m[1]);
  }
  return undefined;
}

/** The linear modules' names, for error messages: short names and one full-name example. */
export function describeLinearModules(cfg: ModelConfig): string {
  return (
    `its linear modules are ${linearModules(cfg).map((m) => m.name).join(", ")} in every layer ` +
    `(full names like ${linearPrefix(0, linearModules(cfg)[0]!)} ... model.layers.${cfg.numLayers - 1}.mlp.down_proj) and lm_head`
  );
}

/**
 * Resolves target_modules against the model, as PEFT's inject_adapter does. `strict` (for what a
 * user typed) also rejects list entries that match nothing; PEFT, and readAdapter, only fail when
 * no module matches at all. Throws CONFIG_INVALID when nothing matches or a match is not a Linear
 * layer, UNSUPPORTED for lm_head and embed_tokens (PEFT can adapt them; tuna cannot yet).
 */
export function resolveTargetModules(
  target: string | readonly string[] | TargetModulesSpec,
  cfg: ModelConfig,
  options: TargetFilters & { strict?: boolean; where?: string } = {},
): ResolvedTargets {
  const spec = typeof target === "string" ? targetSpecFrom(target) : "kind" in target ? target : targetSpecFrom(target);
  const where = options.where ?? "target_modules";
  const universe = modelModuleNames(cfg);
  const regex = spec.kind === "regex" ? pythonRegex(spec.pattern, "full", where) : null;
  const exclude = options.exclude ?? null;
  const excludeRegex = exclude?.kind === "regex" ? pythonRegex(exclude.pattern, "full", "exclude_modules") : null;
  const layerFilter = spec.kind !== "regex" && options.layersToTransform != null ? new Set(options.layersToTransform) : null;

  const chosen = new Set<string>();
  const used = new Set<string>();
  const unsupported: string[] = [];
  for (const [key, role] of universe) {
    if (exclude !== null && matches(exclude, key, excludeRegex)) continue;
    let hit: boolean;
    if (spec.kind === "all-linear") {
      // PEFT collects every nn.Linear except the output embedding (lm_head), then matches the names.
      hit = role.role === "projection";
    } else {
      hit = matches(spec, key, regex);
      if (hit && spec.kind === "names") for (const t of spec.names) if (key === t || key.endsWith(`.${t}`)) used.add(t);
    }
    if (!hit) continue;
    if (layerFilter !== null) {
      const index = layerIndexOf(key, options.layersPattern);
      if (index === undefined || !layerFilter.has(index)) continue;
    }
    if (role.role === "projection") chosen.add(key);
    else unsupported.push(`${key} (${role.role === "other" ? "not a Linear layer" : role.role})`);
  }

  const others = unsupported.filter((u) => u.endsWith("(not a Linear layer)"));
  if (others.length > 0) {
    throw new TunaError(
      "CONFIG_INVALID",
      `${where} ${describeSpec(spec)} selects modules LoRA cannot wrap: ${others.slice(0, 5).join(", ")}${others.length > 5 ? ", ..." : ""}; ` +
        `only Linear layers can be targeted (${describeLinearModules(cfg)}).`,
    );
  }
  if (unsupported.length > 0) {
    throw new TunaError(
      "UNSUPPORTED",
      `${where} ${describeSpec(spec)} selects ${unsupported.join(", ")}: LoRA on the embedding or the output head is not ` +
        `supported by tuna yet; target the decoder projections instead (${linearModules(cfg).map((m) => m.name).join(", ")}).`,
    );
  }
  const unknown = spec.kind === "names" ? spec.names.filter((t) => !used.has(t)) : [];
  if (chosen.size === 0 || (options.strict === true && unknown.length > 0)) {
    const missing = spec.kind === "names" ? `{${(chosen.size === 0 ? spec.names : unknown).join(", ")}}` : describeSpec(spec);
    const hint =
      spec.kind === "regex" && spec.pattern.includes(",")
        ? " A single string is a regular expression matched against full module names (PEFT semantics); give a list of names instead."
        : "";
    throw new TunaError(
      "CONFIG_INVALID",
      `Target modules ${missing} not found in the base model (${cfg.modelType}, ${cfg.numLayers} layers): ${describeLinearModules(cfg)}. ` +
        `Use short names (q_proj,v_proj), full module names, a regular expression, or all-linear.${hint}`,
    );
  }
  const modules: TargetModule[] = [];
  const byLayer: LinearName[][] = Array.from({ length: cfg.numLayers }, () => []);
  for (const [key, role] of universe) {
    if (role.role !== "projection" || !chosen.has(key)) continue;
    modules.push({ name: key, layer: role.layer, linear: role.linear });
    byLayer[role.layer]?.push(role.linear);
  }
  return { modules, byLayer };
}

function describeSpec(spec: TargetModulesSpec): string {
  if (spec.kind === "all-linear") return '"all-linear"';
  if (spec.kind === "regex") return JSON.stringify(spec.pattern);
  return JSON.stringify(spec.names);
}

/**
 * PEFT's get_pattern_key: the first key, in order, for which `(.*\.)?(key)$` matches the module name
 * from its start wins; undefined when none does (then r / lora_alpha apply).
 */
export function patternValue(pattern: readonly (readonly [string, number])[], moduleName: string): number | undefined {
  for (const [key, value] of pattern) {
    if (pythonRegex(`(.*\\.)?(${key})$`, "start", `pattern key ${JSON.stringify(key)}`).test(moduleName)) return value;
  }
  return undefined;
}
