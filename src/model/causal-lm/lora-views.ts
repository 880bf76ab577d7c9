// A linear's LoRA as views of the trainable buffer (src/lora's layout): A, B and DoRA's magnitude of the PEFT
// module, cut by rows for a part of a fused module (Phi-3), and the adapter's weights attached to base weights
// already loaded (serving several adapters from one base).
import type { Backend } from "../../backend/types.ts";
import { TunaError } from "../../util/errors.ts";
import { linearModules, linearPrefix, type Projection } from "../../hf/weights.ts";
import { loraKey, loraLayout, magnitudeKey, tokenRowsKey, type LoraLayout, type LoraModuleLayout } from "../../lora/layout.ts";
import type { LoraSettings } from "../../lora/settings.ts";
import { createTrainableBuffers, trainableView, type TrainableBuffers } from "../trainable.ts";
import type { CausalLmParams, Linear, LoraModule } from "./params.ts";

/** Trainable tensors in the exact order (and so offsets) of src/lora's flat layout. */
export function loraSpecs(layout: LoraLayout): { name: string; shape: number[] }[] {
  const specs: { name: string; shape: number[] }[] = [];
  for (const m of layout.modules) {
    specs.push({ name: loraKey(m.name, "A"), shape: m.aShape }, { name: loraKey(m.name, "B"), shape: m.bShape });
    if (m.magnitudeOffset !== null) specs.push({ name: magnitudeKey(m.name), shape: [m.outFeatures] });
  }
  for (const t of layout.tokens) specs.push({ name: tokenRowsKey(t.module), shape: t.shape });
  return specs;
}

/**
 * The LoRA of rows [start, start + rows) of the PEFT module `m` (all of it for an unfused module): A shared, B and
 * the magnitude by rows, DoRA's norms allocated in `normsDtype`. `inputOf` names the fused module's first part.
 */
export function loraModuleViews(
  backend: Backend,
  trainable: TrainableBuffers,
  m: LoraModuleLayout,
  part: { projection: Projection; start: number; rows: number },
  inputOf: Projection | null,
  dropout: number,
  normsDtype: "f32" | "bf16",
): LoraModule {
  const a = trainableView(trainable, loraKey(m.name, "A"));
  const b = trainableView(trainable, loraKey(m.name, "B"));
  let dora: LoraModule["dora"] = null;
  if (m.magnitudeOffset !== null) {
    const mag = trainableView(trainable, magnitudeKey(m.name));
    dora = {
      magnitude: backend.rows(mag.param, part.start, part.rows),
      dMagnitude: backend.rows(mag.grad, part.start, part.rows),
      norms: backend.alloc(normsDtype, [part.rows], `${m.name}.${part.projection}.dora_norms`),
    };
  }
  return {
    rank: m.r,
    scale: m.scaling,
    dropout,
    A: a.param,
    B: backend.rows(b.param, part.start, part.rows),
    dA: a.grad,
    dB: backend.rows(b.grad, part.start, part.rows),
    dora,
    inputOf,
  };
}

/**
 * Another adapter over the base weights of `base` (loaded without one): the frozen tensors are shared, the adapter
 * gets its own trainable buffer (filled by the caller) and LoRA views. Adapters that bring embedding rows or
 * whole embeddings need a load of their own.
 */
export function withAdapter(backend: Backend, base: CausalLmParams, settings: LoraSettings, normsDtype: "f32" | "bf16"): CausalLmParams {
  if (settings.trainableTokens !== null || settings.modulesToSave !== null) {
    throw new TunaError("UNSUPPORTED", "an adapter with trained embedding rows cannot share another adapter's base weights; load it on its own");
  }
  const cfg = base.cfg;
  const layout = loraLayout(settings, cfg);
  const trainable = createTrainableBuffers(backend, loraSpecs(layout));
  const byModule = new Map(layout.modules.map((m) => [m.name, m]));
  const layers = base.layers.map((layer, l) => {
    const proj = { ...layer.proj };
    for (const linear of linearModules(cfg)) {
      const m = byModule.get(linearPrefix(l, linear));
      linear.parts.forEach((part, i) => {
        const lin: Linear = layer.proj[part.projection];
        proj[part.projection] = { ...lin, lora: m === undefined ? null : loraModuleViews(backend, trainable, m, part, i === 0 ? null : linear.parts[0]!.projection, settings.dropout, normsDtype) };
      });
    }
    return { ...layer, proj };
  });
  return { ...base, layers, trainable, embedRows: null, lmHeadRows: null, effectiveLmHead: null, lmHeadGradScratch: null };
}
