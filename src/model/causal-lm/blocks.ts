// The decoder block of each family, registered by family: the pre-norm block of Llama, Mistral, Qwen2/3 and
// Phi-3 (x2 = x + attn(norm(x)); out = x2 + mlp(norm(x2))), and Gemma 2/3's sandwich block, which also norms
// each sub-layer's output before adding it (x2 = x + norm(attn(norm(x))); out = x2 + norm(mlp(norm(x2)))).
// Both are built from the shared sub-layers (sublayers.ts); a family with another block shape (parallel
// attention and MLP, MoE) adds its implementation here. Training, checkpoint recompute and KV-cache decoding
// all run the same implementation.
import type { Backend, Tensor } from "../../backend/types.ts";
import type { Rng } from "../../util/random.ts";
import { TunaError } from "../../util/errors.ts";
import type { ModelConfig } from "../../hf/config.ts";
import type { ModelFamily } from "../../hf/families.ts";
import type { BlockSlots } from "./activations.ts";
import type { LinearScratch } from "./linear.ts";
import type { LayerParams } from "./params.ts";
import { attentionBackward, attentionForward, mlpBackward, mlpForward, normOptions, type Attend, type BlockForwardSlots, type BlockGradients, type SequenceInputs } from "./sublayers.ts";

export interface BlockImplementation {
  /** out (N, C) = block(x (N, C)) with the given attention step, filling `s`; out may not alias x. */
  forward(
    backend: Backend,
    cfg: ModelConfig,
    layer: LayerParams,
    s: BlockForwardSlots,
    x: Tensor,
    out: Tensor,
    rope: { positions: Tensor; invFreq: Tensor },
    attend: Attend,
    scratch: LinearScratch,
    rng: Rng | null,
  ): void;
  /** Layer l's backward. dx (N, C): on entry the gradient w.r.t. the block output, on exit w.r.t. its input x. */
  backward(backend: Backend, cfg: ModelConfig, l: number, layer: LayerParams, s: BlockSlots, x: Tensor, dx: Tensor, seq: SequenceInputs, g: BlockGradients): void;
}

/** Llama's block: each sub-layer reads the normed stream and adds its output to it. */
export const preNormBlock: BlockImplementation = {
  forward(backend, cfg, layer, s, x, out, rope, attend, scratch, rng) {
    backend.rmsnormForward(s.ln1, s.rstd1, x, layer.inputNorm, cfg.rmsNormEps, normOptions(cfg));
    attentionForward(backend, cfg, layer, s, s.x2, rope, attend, scratch, rng);
    backend.add(s.x2, s.x2, x);
    backend.rmsnormForward(s.ln2, s.rstd2, s.x2, layer.postNorm, cfg.rmsNormEps, normOptions(cfg));
    mlpForward(backend, cfg, layer, s, out, scratch, rng);
    backend.add(out, out, s.x2);
  },
  backward(backend, cfg, l, layer, s, x, dx, seq, g) {
    // out = x2 + mlp(ln2): the residual passes dx to x2 unchanged, the MLP's part comes through ln2.
    mlpBackward(backend, cfg, layer, s, dx, g);
    backend.copy(g.dx2, dx);
    backend.rmsnormBackward(g.dx2, layer.dPostNorm, g.dln, s.x2, layer.postNorm, s.rstd2, true, normOptions(cfg));
    attentionBackward(backend, cfg, l, layer, s, g.dx2, seq, g);
    backend.copy(dx, g.dx2);
    backend.rmsnormBackward(dx, layer.dInputNorm, g.dln, x, layer.inputNorm, s.rstd1, true, normOptions(cfg));
  },
};

function sandwichParts(layer: LayerParams, s: BlockForwardSlots): { norms: NonNullable<LayerParams["sandwich"]>; raw: NonNullable<BlockSlots["sandwich"]> } {
  if (layer.sandwich === null || s.sandwich === null) throw new TunaError("INTERNAL", "the sandwich block needs its norm weights and activation slots");
  return { norms: layer.sandwich, raw: s.sandwich };
}

/** Gemma 2/3's block: each sub-layer's output is normed (post_attention / post_feedforward) before the residual add. */
export const sandwichBlock: BlockImplementation = {
  forward(backend, cfg, layer, s, x, out, rope, attend, scratch, rng) {
    const { norms, raw } = sandwichParts(layer, s);
    backend.rmsnormForward(s.ln1, s.rstd1, x, layer.inputNorm, cfg.rmsNormEps, normOptions(cfg));
    attentionForward(backend, cfg, layer, s, raw.o, rope, attend, scratch, rng);
    backend.rmsnormForward(s.x2, raw.rstdO, raw.o, norms.attnOut, cfg.rmsNormEps, normOptions(cfg));
    backend.add(s.x2, s.x2, x);
    backend.rmsnormForward(s.ln2, s.rstd2, s.x2, layer.postNorm, cfg.rmsNormEps, normOptions(cfg));
    mlpForward(backend, cfg, layer, s, raw.down, scratch, rng);
    backend.rmsnormForward(out, raw.rstdDown, raw.down, norms.mlpOut, cfg.rmsNormEps, normOptions(cfg));
    backend.add(out, out, s.x2);
  },
  backward(backend, cfg, l, layer, s, x, dx, seq, g) {
    const { norms, raw } = sandwichParts(layer, s);
    // dx2 is free until the residual's copy below: it takes the gradient of down(h) before its norm.
    backend.rmsnormBackward(g.dx2, norms.dMlpOut, dx, raw.down, norms.mlpOut, raw.rstdDown, false, normOptions(cfg));
    mlpBackward(backend, cfg, layer, s, g.dx2, g);
    backend.copy(g.dx2, dx);
    backend.rmsnormBackward(g.dx2, layer.dPostNorm, g.dln, s.x2, layer.postNorm, s.rstd2, true, normOptions(cfg));
    // dln is free until the q/k/v backward refills it: it takes the gradient of o(att) before its norm.
    backend.rmsnormBackward(g.dln, norms.dAttnOut, g.dx2, raw.o, norms.attnOut, raw.rstdO, false, normOptions(cfg));
    attentionBackward(backend, cfg, l, layer, s, g.dln, seq, g);
    backend.copy(dx, g.dx2);
    backend.rmsnormBackward(dx, layer.dInputNorm, g.dln, x, layer.inputNorm, s.rstd1, true, normOptions(cfg));
  },
};

/** Each family's block (a literal registry: a new family names its block here, or adds one above). */
export const FAMILY_BLOCKS: Readonly<Record<ModelFamily, BlockImplementation>> = {
  llama: preNormBlock,
  mistral: preNormBlock,
  qwen2: preNormBlock,
  qwen3: preNormBlock,
  phi3: preNormBlock,
  gemma2: sandwichBlock,
  gemma3: sandwichBlock,
};

export function blockOf(cfg: ModelConfig): BlockImplementation {
  return FAMILY_BLOCKS[cfg.family];
}
