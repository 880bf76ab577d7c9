// One decoder block as the model runs it: the family's block (blocks.ts) in training, with the attention step
// of packed sequences, or in KV-cache decoding with the attention step the decoder gives.
import type { Backend, Tensor } from "../../backend/types.ts";
import type { Rng } from "../../util/random.ts";
import type { ModelConfig } from "../../hf/config.ts";
import type { BlockSlots } from "./activations.ts";
import { blockOf } from "./blocks.ts";
import type { LinearScratch } from "./linear.ts";
import type { LayerParams } from "./params.ts";
import { attentionOptions, type Attend, type BlockForwardSlots, type BlockGradients, type SequenceInputs } from "./sublayers.ts";

export { attentionOptions, normOptions, type BlockGradients, type SequenceInputs } from "./sublayers.ts";

/** out (N, C) = block(x (N, C)) with the given attention step (decoding attends to its KV cache), filling `s`. */
export function blockForwardWith(
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
): void {
  blockOf(cfg).forward(backend, cfg, layer, s, x, out, rope, attend, scratch, rng);
}

/** The training forward of layer l: attention within each packed sequence, its log-sum-exp kept for the backward. */
export function blockForward(
  backend: Backend,
  cfg: ModelConfig,
  l: number,
  layer: LayerParams,
  s: BlockSlots,
  x: Tensor,
  out: Tensor,
  seq: SequenceInputs,
  scratch: LinearScratch,
  rng: Rng | null,
): void {
  const scale = cfg.attentionScale;
  blockOf(cfg).forward(backend, cfg, layer, s, x, out, seq, (att, q, k, v) => {
    backend.attentionForward(att, s.lse, q, k, v, seq.cuSeqlens, scale, attentionOptions(cfg, l));
  }, scratch, rng);
}

/** Layer l's backward. dx (N, C): on entry the gradient w.r.t. the block output, on exit w.r.t. its input x. */
export function blockBackward(backend: Backend, cfg: ModelConfig, l: number, layer: LayerParams, s: BlockSlots, x: Tensor, dx: Tensor, seq: SequenceInputs, g: BlockGradients): void {
  blockOf(cfg).backward(backend, cfg, l, layer, s, x, dx, seq, g);
}
