// The LoRA parameters as one flat float32 buffer with named views, and their initialization as
// PEFT does it: A kaiming-uniform(a=sqrt(5)) or gaussian, B zero, token rows copied from the base.
import { TunaError } from "../util/errors.ts";
import type { Rng } from "../util/random.ts";
import type { ModelConfig } from "../hf/config.ts";
import { loraLayout, type LoraLayout } from "./layout.ts";
import type { EmbeddingModule, LoraSettings } from "./settings.ts";

export interface LoraTensors {
  a: Float32Array; // (R, in)
  b: Float32Array; // (out, R)
  /** DoRA's magnitude (out), or null without DoRA. */
  magnitude: Float32Array | null;
}

export interface LoraParams {
  layout: LoraLayout;
  /** Every trainable parameter, in layout order; the views below share its memory. */
  flat: Float32Array;
  /** By full module name, e.g. "model.layers.0.self_attn.q_proj". */
  byModule: Map<string, LoraTensors>;
  /** Trainable token rows (n, C) by embedding module. */
  tokenRows: Map<EmbeddingModule, Float32Array>;
}

/** Zero-filled parameters for a layout. */
export function allocateLoraParams(layout: LoraLayout): LoraParams {
  const flat = new Float32Array(layout.trainableParams);
  const byModule = new Map<string, LoraTensors>();
  for (const m of layout.modules) {
    byModule.set(m.name, {
      a: flat.subarray(m.aOffset, m.aOffset + m.aShape[0] * m.aShape[1]),
      b: flat.subarray(m.bOffset, m.bOffset + m.bShape[0] * m.bShape[1]),
      magnitude: m.magnitudeOffset === null ? null : flat.subarray(m.magnitudeOffset, m.magnitudeOffset + m.outFeatures),
    });
  }
  const tokenRows = new Map<EmbeddingModule, Float32Array>();
  for (const t of layout.tokens) tokenRows.set(t.module, flat.subarray(t.offset, t.offset + t.shape[0] * t.shape[1]));
  return { layout, flat, byModule, tokenRows };
}

/**
 * torch.nn.init.kaiming_uniform_(A, a=sqrt(5)) on A (R, in): fan_in = in, gain = sqrt(2 / (1 + 5)),
 * bound = gain * sqrt(3 / fan_in) = 1 / sqrt(in).
 */
export function kaimingUniformBound(inFeatures: number): number {
  return 1 / Math.sqrt(inFeatures);
}

/**
 * New adapter parameters as PEFT's reset_lora_parameters makes them: B = 0, so the adapted model
 * starts equal to the base; A ~ U(-1/sqrt(in), 1/sqrt(in)) (init true) or N(0, (1/R)^2) ("gaussian").
 * Values come from `rng`, not torch's generator, so only the distributions match PEFT. Token rows
 * stay zero: fill them with copyTokenRows from the base embeddings. DoRA magnitudes stay zero too: they are the
 * row norms of the base weights, computed where the weights are (initDoraMagnitudes, src/model/causal-lm/dora.ts).
 */
export function initLoraWeights(settings: LoraSettings, cfg: ModelConfig, rng: Rng): LoraParams {
  const mode = settings.initLoraWeights;
  if (mode !== true && mode !== "gaussian") {
    throw new TunaError("UNSUPPORTED", `init_lora_weights ${JSON.stringify(mode)} is not implemented; use true (PEFT's default) or "gaussian".`);
  }
  const params = allocateLoraParams(loraLayout(settings, cfg));
  for (const m of params.layout.modules) {
    const a = params.byModule.get(m.name)?.a;
    if (a === undefined) throw new TunaError("INTERNAL", `no view for ${m.name}`);
    if (mode === true) {
      const bound = kaimingUniformBound(m.inFeatures);
      for (let i = 0; i < a.length; i++) a[i] = (2 * rng.uniform() - 1) * bound;
    } else {
      const std = 1 / m.r;
      for (let i = 0; i < a.length; i++) a[i] = rng.normal() * std;
    }
  }
  return params;
}

/**
 * TrainableTokensLayer.update_layer: the trained rows start as copies of the base rows
 * (`weight[indices]`). `weights` are the base embed_tokens / lm_head matrices (V, C), float32.
 */
export function copyTokenRows(params: LoraParams, weights: Partial<Record<EmbeddingModule, Float32Array>>): void {
  for (const t of params.layout.tokens) {
    const source = weights[t.module];
    const target = params.tokenRows.get(t.module);
    if (source === undefined || target === undefined) {
      throw new TunaError("INTERNAL", `copyTokenRows needs the base ${t.module} weight for trainable token rows`);
    }
    const C = t.shape[1];
    for (const [row, id] of t.indices.entries()) {
      if ((id + 1) * C > source.length) throw new TunaError("INTERNAL", `token ${id} is outside the ${t.module} weight (${source.length / C} rows)`);
      target.set(source.subarray(id * C, (id + 1) * C), row * C);
    }
  }
}
