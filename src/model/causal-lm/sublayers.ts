// The two sub-layers every decoder block of the supported families is made of, forward and backward:
// attention (q/k/v projections, the optional per-head q/k norms of Qwen3 and Gemma 3, RoPE, the attention step,
// o_proj) and the gated MLP (gate/up, SwiGLU or GeGLU, down). The blocks (blocks.ts) differ in how they norm
// and add these around the residual stream.
import type { AttentionOptions, Backend, RmsnormOptions, Tensor } from "../../backend/types.ts";
import type { Rng } from "../../util/random.ts";
import { TunaError } from "../../util/errors.ts";
import type { ModelConfig } from "../../hf/config.ts";
import type { BlockSlots } from "./activations.ts";
import { linearBackward, linearForward, type LinearBackwardScratch, type LinearScratch } from "./linear.ts";
import type { LayerParams } from "./params.ts";

export interface SequenceInputs {
  positions: Tensor; // i32 (N)
  cuSeqlens: Tensor; // i32 (S+1)
  invFreq: Tensor; // f32 (D/2)
}

/**
 * The attention step of a block: q and k after RoPE, v, and the output att as (tokens, heads, D) views.
 * Training attends within each packed sequence; decoding attends to the KV cache (decode.ts).
 */
export type Attend = (att: Tensor, q: Tensor, k: Tensor, v: Tensor) => void;

/** What the forward writes. Training keeps every slot for the backward; decoding may alias ln1/ln2 and rstd1/rstd2. */
export type BlockForwardSlots = Omit<BlockSlots, "lse">;

export interface BlockGradients extends LinearBackwardScratch {
  dln: Tensor; // (N, C)
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  datt: Tensor;
  dgate: Tensor;
  dup: Tensor;
  dh: Tensor;
  /** (N, C) scratch for the residual gradient inside the block. */
  dx2: Tensor;
  /** Qwen3: (N, KV*D) gradient of the keys before their norm (the queries' goes to datt, free by then). */
  dkRaw: Tensor | null;
}

export function heads(backend: Backend, t: Tensor, n: number, D: number): Tensor {
  return backend.view(t, [t.shape[0]!, n, D]);
}

/** (N, heads * D) as (N * heads, D): one row per head, as a per-head norm sees it. */
function perHead(backend: Backend, t: Tensor, rows: number, D: number): Tensor {
  return backend.view(t, [rows, D]);
}

function flat(backend: Backend, t: Tensor): Tensor {
  return backend.view(t, [t.size]);
}

/** How the family applies its norm weights: Gemma's as (1 + w), in f32 (RmsnormOptions.plusOne). */
export function normOptions(cfg: ModelConfig): RmsnormOptions {
  return cfg.normPlusOne ? PLUS_ONE : {};
}

const PLUS_ONE: RmsnormOptions = { plusOne: true };

/** Layer l's attention reach and shape: its sliding window (HF layer_types) and score soft-cap, if any. */
export function attentionOptions(cfg: ModelConfig, l: number): AttentionOptions {
  const window = cfg.layerWindows[l] ?? null;
  return { ...(window === null ? {} : { window }), ...(cfg.attnSoftcap === null ? {} : { softcap: cfg.attnSoftcap }) };
}

/** out (N, C) = o_proj(attend(rope(q(ln1)), rope(k(ln1)), v(ln1))) from s.ln1, filling the attention slots. */
export function attentionForward(
  backend: Backend,
  cfg: ModelConfig,
  layer: LayerParams,
  s: BlockForwardSlots,
  out: Tensor,
  rope: { positions: Tensor; invFreq: Tensor },
  attend: Attend,
  scratch: LinearScratch,
  rng: Rng | null,
): void {
  const { numHeads: H, numKvHeads: KV, headDim: D } = cfg;
  const p = layer.proj;
  const norms = layer.qkNorm;
  const raw = s.qkNorm;
  if ((norms === null) !== (raw === null)) throw new TunaError("INTERNAL", "q/k norm weights and their activation slots must come together");
  // With q/k norms the projections land in the raw slots and the normalized heads in s.q, s.k.
  linearForward(backend, p.q_proj, raw?.q ?? s.q, s.ln1, s.lora.q_proj, scratch, rng);
  linearForward(backend, p.k_proj, raw?.k ?? s.k, s.ln1, s.lora.k_proj, scratch, rng);
  linearForward(backend, p.v_proj, s.v, s.ln1, s.lora.v_proj, scratch, rng);
  if (norms !== null && raw !== null) {
    const N = s.ln1.shape[0]!;
    backend.rmsnormForward(perHead(backend, s.q, N * H, D), flat(backend, raw.rstdQ), perHead(backend, raw.q, N * H, D), norms.q, cfg.rmsNormEps, normOptions(cfg));
    backend.rmsnormForward(perHead(backend, s.k, N * KV, D), flat(backend, raw.rstdK), perHead(backend, raw.k, N * KV, D), norms.k, cfg.rmsNormEps, normOptions(cfg));
  }
  const q = heads(backend, s.q, H, D);
  const k = heads(backend, s.k, KV, D);
  backend.ropeForward(q, rope.positions, rope.invFreq);
  backend.ropeForward(k, rope.positions, rope.invFreq);
  attend(heads(backend, s.att, H, D), q, k, heads(backend, s.v, KV, D));
  linearForward(backend, p.o_proj, out, s.att, s.lora.o_proj, scratch, rng);
}

/** From dOut, the gradient of the sub-layer's output: g.dln becomes the gradient w.r.t. s.ln1 (dOut may be g.dln). */
export function attentionBackward(backend: Backend, cfg: ModelConfig, l: number, layer: LayerParams, s: BlockSlots, dOut: Tensor, seq: SequenceInputs, g: BlockGradients): void {
  const { numHeads: H, numKvHeads: KV, headDim: D } = cfg;
  const p = layer.proj;
  linearBackward(backend, p.o_proj, g.datt, dOut, s.att, s.lora.o_proj, g, false);
  backend.attentionBackward(
    heads(backend, g.dq, H, D),
    heads(backend, g.dk, KV, D),
    heads(backend, g.dv, KV, D),
    heads(backend, g.datt, H, D),
    heads(backend, s.q, H, D),
    heads(backend, s.k, KV, D),
    heads(backend, s.v, KV, D),
    heads(backend, s.att, H, D),
    s.lse,
    seq.cuSeqlens,
    cfg.attentionScale,
    attentionOptions(cfg, l),
  );
  backend.ropeBackward(heads(backend, g.dq, H, D), seq.positions, seq.invFreq);
  backend.ropeBackward(heads(backend, g.dk, KV, D), seq.positions, seq.invFreq);
  let dq = g.dq;
  let dk = g.dk;
  const norms = layer.qkNorm;
  const raw = s.qkNorm;
  if (norms !== null && raw !== null) {
    if (g.dkRaw === null) throw new TunaError("INTERNAL", "q/k norms need the dkRaw scratch");
    const N = s.ln1.shape[0]!;
    // datt was consumed by the attention backward: it takes the queries' gradient before their norm.
    backend.rmsnormBackward(perHead(backend, g.datt, N * H, D), norms.dq, perHead(backend, g.dq, N * H, D), perHead(backend, raw.q, N * H, D), norms.q, flat(backend, raw.rstdQ), false, normOptions(cfg));
    backend.rmsnormBackward(perHead(backend, g.dkRaw, N * KV, D), norms.dk, perHead(backend, g.dk, N * KV, D), perHead(backend, raw.k, N * KV, D), norms.k, flat(backend, raw.rstdK), false, normOptions(cfg));
    dq = g.datt;
    dk = g.dkRaw;
  }
  linearBackward(backend, p.q_proj, g.dln, dq, s.ln1, s.lora.q_proj, g, false);
  linearBackward(backend, p.k_proj, g.dln, dk, s.ln1, s.lora.k_proj, g, true);
  linearBackward(backend, p.v_proj, g.dln, g.dv, s.ln1, s.lora.v_proj, g, true);
}

/** out (N, C) = down(act(gate(ln2)) * up(ln2)) from s.ln2, act being SwiGLU's silu or GeGLU's tanh GELU. */
export function mlpForward(backend: Backend, cfg: ModelConfig, layer: LayerParams, s: BlockForwardSlots, out: Tensor, scratch: LinearScratch, rng: Rng | null): void {
  const p = layer.proj;
  linearForward(backend, p.gate_proj, s.gate, s.ln2, s.lora.gate_proj, scratch, rng);
  linearForward(backend, p.up_proj, s.up, s.ln2, s.lora.up_proj, scratch, rng);
  backend.swigluForward(s.h, s.gate, s.up, cfg.hiddenAct);
  linearForward(backend, p.down_proj, out, s.h, s.lora.down_proj, scratch, rng);
}

/** From dOut, the gradient of the MLP's output: g.dln becomes the gradient w.r.t. s.ln2. */
export function mlpBackward(backend: Backend, cfg: ModelConfig, layer: LayerParams, s: BlockSlots, dOut: Tensor, g: BlockGradients): void {
  const p = layer.proj;
  linearBackward(backend, p.down_proj, g.dh, dOut, s.h, s.lora.down_proj, g, false);
  backend.swigluBackward(g.dgate, g.dup, g.dh, s.gate, s.up, cfg.hiddenAct);
  linearBackward(backend, p.gate_proj, g.dln, g.dgate, s.ln2, s.lora.gate_proj, g, false);
  linearBackward(backend, p.up_proj, g.dln, g.dup, s.ln2, s.lora.up_proj, g, true);
}
