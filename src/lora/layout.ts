// Where each LoRA tensor sits in the one flat trainable-parameter buffer, the key it is saved under
// in adapter_model.safetensors, the trainable/all parameter counts and PEFT's printout of them.
import type { ModelConfig } from "../hf/config.ts";
import { TunaError } from "../util/errors.ts";
import { countParameters, linearModules } from "../hf/weights.ts";
import { groupThousands, pythonFixed } from "./python-format.ts";
import { moduleAlpha, moduleRank, loraScaling, type EmbeddingModule, type LoraSettings } from "./settings.ts";
import type { TargetModule } from "./targets.ts";

export interface LoraModuleLayout extends TargetModule {
  r: number; // R of this module (rank_pattern applied)
  alpha: number;
  scaling: number;
  inFeatures: number;
  outFeatures: number;
  /** lora_A.weight (R, in) and lora_B.weight (out, R), row-major, as nn.Linear stores them. */
  aShape: [number, number];
  bShape: [number, number];
  /** Element offsets into the flat buffer. */
  aOffset: number;
  bOffset: number;
  /** DoRA's lora_magnitude_vector (out) offset, or null without DoRA. */
  magnitudeOffset: number | null;
}

export interface TokenRowsLayout {
  module: EmbeddingModule;
  /** Token ids whose rows are trained, in the order of the saved rows. */
  indices: number[];
  shape: [number, number]; // (n, C)
  offset: number;
}

export interface LoraLayout {
  modules: LoraModuleLayout[];
  tokens: TokenRowsLayout[];
  /** Elements of the flat buffer = trainable parameters (no padding between tensors). */
  trainableParams: number;
}

/** The prefix PeftModelForCausalLM -> LoraModel puts before the HF module path. */
export const ADAPTER_KEY_PREFIX = "base_model.model.";

const EMBEDDING_MODULE_PATH: Record<EmbeddingModule, string> = { embed_tokens: "model.embed_tokens", lm_head: "lm_head" };

/** The saved key of lora_A / lora_B (PEFT strips the adapter name on save). */
export function loraKey(moduleName: string, which: "A" | "B"): string {
  return `${ADAPTER_KEY_PREFIX}${moduleName}.lora_${which}.weight`;
}

/** The saved key of DoRA's magnitude vector (PEFT drops the ".weight" of its DoraLinearLayer on save). */
export function magnitudeKey(moduleName: string): string {
  return `${ADAPTER_KEY_PREFIX}${moduleName}.lora_magnitude_vector`;
}

/** The saved key of trainable token rows. */
export function tokenRowsKey(module: EmbeddingModule): string {
  return `${ADAPTER_KEY_PREFIX}${EMBEDDING_MODULE_PATH[module]}.token_adapter.trainable_tokens_delta`;
}

/** The saved key of a whole embedding matrix (resized vocabulary or modules_to_save). */
export function embeddingKey(module: EmbeddingModule): string {
  return `${ADAPTER_KEY_PREFIX}${EMBEDDING_MODULE_PATH[module]}.weight`;
}

export function loraLayout(settings: LoraSettings, cfg: ModelConfig): LoraLayout {
  let offset = 0;
  const modules: LoraModuleLayout[] = [];
  for (const target of settings.targetModules) {
    const r = moduleRank(settings, target.name);
    const linear = linearModules(cfg).find((m) => m.name === target.linear);
    if (linear === undefined) throw new TunaError("INTERNAL", `${target.name}: ${target.linear} is not a linear module of this model`);
    const { out, in: inFeatures } = linear;
    const aOffset = offset;
    offset += r * inFeatures;
    const bOffset = offset;
    offset += out * r;
    const magnitudeOffset = settings.useDora ? offset : null;
    if (settings.useDora) offset += out;
    modules.push({
      ...target,
      r,
      alpha: moduleAlpha(settings, target.name),
      scaling: loraScaling(settings, target.name),
      inFeatures,
      outFeatures: out,
      aShape: [r, inFeatures],
      bShape: [out, r],
      aOffset,
      bOffset,
      magnitudeOffset,
    });
  }
  const tokens: TokenRowsLayout[] = [];
  const t = settings.trainableTokens;
  const rows: [EmbeddingModule, number[]][] = t === null ? [] : [["embed_tokens", t.embedTokens], ["lm_head", t.lmHead]];
  for (const [module, indices] of rows) {
    if (indices.length === 0) continue;
    tokens.push({ module, indices: [...indices], shape: [indices.length, cfg.hiddenSize], offset });
    offset += indices.length * cfg.hiddenSize;
  }
  return { modules, tokens, trainableParams: offset };
}

/**
 * PEFT's "all params": every parameter of the wrapped model once (tied weights once), i.e. the base
 * model plus the adapter. 4-bit weights count as their unpacked element count, as PEFT counts them.
 * `cfg.vocabSize` must be the vocabulary after any resize.
 */
export function countAllParameters(layout: LoraLayout, cfg: ModelConfig): number {
  return countParameters(cfg).total + layout.trainableParams;
}

/** PeftModel.print_trainable_parameters' line, digit for digit. */
export function formatTrainableParameters(trainable: number, all: number): string {
  return `trainable params: ${groupThousands(trainable)} || all params: ${groupThousands(all)} || trainable%: ${pythonFixed((100 * trainable) / all, 4)}`;
}

export function trainableParametersLine(settings: LoraSettings, cfg: ModelConfig): string {
  const layout = loraLayout(settings, cfg);
  return formatTrainableParameters(layout.trainableParams, countAllParameters(layout, cfg));
}
