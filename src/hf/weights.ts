// The weights a ModelConfig implies, by their HF names and shapes, grouped by module kind; parameter
// counts and memory estimates (bf16, NF4) derived from that one list.
import type { ModelConfig } from "./config.ts";
import { numel } from "../util/shape.ts";

/** The projections the decoder block computes with, whatever modules the checkpoint stores them in. */
export const PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;
export type Projection = (typeof PROJECTIONS)[number];

/** The nn.Linear modules of a layer as the checkpoint (and PEFT) name them: the projections, or Phi-3's fused ones. */
export type LinearName = Projection | "qkv_proj" | "gate_up_proj";

/**
 * One nn.Linear of a decoder layer: its HF name, shape, and the projections it computes as row ranges of its
 * output (one for most modules; q, k, v for Phi-3's qkv_proj and gate, up for its gate_up_proj).
 */
export interface LinearModule {
  name: LinearName;
  block: "self_attn" | "mlp";
  out: number;
  in: number;
  parts: { projection: Projection; start: number; rows: number }[];
}

/** A layer's linear modules in HF order: Phi-3 fuses q/k/v and gate/up, the others keep the seven projections. */
export function linearModules(cfg: ModelConfig): LinearModule[] {
  const part = (projection: Projection, start = 0): { projection: Projection; start: number; rows: number } => ({ projection, start, rows: projectionShape(cfg, projection).out });
  const single = (p: Projection): LinearModule => ({ name: p, block: p === "gate_proj" || p === "up_proj" || p === "down_proj" ? "mlp" : "self_attn", ...projectionShape(cfg, p), parts: [part(p)] });
  if (!cfg.fusedProjections) return PROJECTIONS.map(single);
  const q = projectionShape(cfg, "q_proj").out;
  const kv = projectionShape(cfg, "k_proj").out;
  const F = cfg.intermediateSize;
  return [
    { name: "qkv_proj", block: "self_attn", out: q + 2 * kv, in: cfg.hiddenSize, parts: [part("q_proj"), part("k_proj", q), part("v_proj", q + kv)] },
    single("o_proj"),
    { name: "gate_up_proj", block: "mlp", out: 2 * F, in: cfg.hiddenSize, parts: [part("gate_proj"), part("up_proj", F)] },
    single("down_proj"),
  ];
}

/** The linear module that computes a projection (itself, or Phi-3's fused module holding it). */
export function linearOf(cfg: ModelConfig, projection: Projection): LinearModule {
  const m = linearModules(cfg).find((x) => x.parts.some((p) => p.projection === projection));
  if (m === undefined) throw new Error(`no linear module computes ${projection}`);
  return m;
}

/** The full module name of a layer's linear, e.g. model.layers.0.self_attn.qkv_proj. */
export function linearPrefix(layer: number, m: LinearModule): string {
  return `model.layers.${layer}.${m.block}.${m.name}`;
}
export type ModuleKind =
  | "embed_tokens"
  | LinearName
  | "input_layernorm"
  | "q_norm"
  | "k_norm"
  | "post_attention_layernorm"
  | "pre_feedforward_layernorm"
  | "post_feedforward_layernorm"
  | "norm"
  | "lm_head";

export interface ExpectedWeight {
  name: string;
  shape: number[];
  kind: ModuleKind;
  /** A linear layer's weight inside a decoder block: what LoRA targets and bnb quantizes. */
  quantizable: boolean;
  isBias: boolean;
}

/** Output and input features of each projection of one decoder layer (nn.Linear: weight is [out, in]). */
export function projectionShape(cfg: ModelConfig, proj: Projection): { out: number; in: number } {
  const q = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  switch (proj) {
    case "q_proj":
      return { out: q, in: cfg.hiddenSize };
    case "k_proj":
    case "v_proj":
      return { out: kv, in: cfg.hiddenSize };
    case "o_proj":
      return { out: cfg.hiddenSize, in: q };
    case "gate_proj":
    case "up_proj":
      return { out: cfg.intermediateSize, in: cfg.hiddenSize };
    case "down_proj":
      return { out: cfg.hiddenSize, in: cfg.intermediateSize };
  }
}

/** Whether a projection has a bias: Llama's attention_bias / mlp_bias, Qwen2's q/k/v. */
export function projectionHasBias(cfg: ModelConfig, proj: Projection): boolean {
  if (proj === "o_proj") return cfg.oBias;
  if (proj === "q_proj" || proj === "k_proj" || proj === "v_proj") return cfg.qkvBias;
  return cfg.mlpBias;
}

export function projectionPrefix(layer: number, proj: Projection): string {
  const block = proj === "gate_proj" || proj === "up_proj" || proj === "down_proj" ? "mlp" : "self_attn";
  return `model.layers.${layer}.${block}.${proj}`;
}

/** Every tensor the checkpoint must hold, in HF order (lm_head absent when embeddings are tied). */
export function expectedWeights(cfg: ModelConfig): ExpectedWeight[] {
  const C = cfg.hiddenSize;
  const out: ExpectedWeight[] = [
    { name: "model.embed_tokens.weight", shape: [cfg.vocabSize, C], kind: "embed_tokens", quantizable: false, isBias: false },
  ];
  for (let l = 0; l < cfg.numLayers; l++) {
    out.push({ name: `model.layers.${l}.input_layernorm.weight`, shape: [C], kind: "input_layernorm", quantizable: false, isBias: false });
    for (const m of linearModules(cfg)) {
      const prefix = linearPrefix(l, m);
      out.push({ name: `${prefix}.weight`, shape: [m.out, m.in], kind: m.name, quantizable: true, isBias: false });
      if (projectionHasBias(cfg, m.parts[0]!.projection)) out.push({ name: `${prefix}.bias`, shape: [m.out], kind: m.name, quantizable: false, isBias: true });
      if (m.name === "o_proj" && cfg.qkNorm) {
        for (const norm of ["q_norm", "k_norm"] as const) {
          out.push({ name: `model.layers.${l}.self_attn.${norm}.weight`, shape: [cfg.headDim], kind: norm, quantizable: false, isBias: false });
        }
      }
    }
    // Gemma 2/3 norm the attention output (post_attention_layernorm) and the MLP's input and output.
    const norms = cfg.sandwichNorms ? (["post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"] as const) : (["post_attention_layernorm"] as const);
    for (const kind of norms) out.push({ name: `model.layers.${l}.${kind}.weight`, shape: [C], kind, quantizable: false, isBias: false });
  }
  out.push({ name: "model.norm.weight", shape: [C], kind: "norm", quantizable: false, isBias: false });
  if (!cfg.tieWordEmbeddings) out.push({ name: "lm_head.weight", shape: [cfg.vocabSize, C], kind: "lm_head", quantizable: false, isBias: false });
  return out;
}


export interface ParameterCounts {
  total: number;
  byKind: Partial<Record<ModuleKind, number>>;
  /** Parameters in the decoder blocks' linear weights (what 4-bit quantization stores packed). */
  quantizable: number;
}

export function countParameters(cfg: ModelConfig): ParameterCounts {
  const byKind: Partial<Record<ModuleKind, number>> = {};
  let total = 0;
  let quantizable = 0;
  for (const w of expectedWeights(cfg)) {
    const n = numel(w.shape);
    byKind[w.kind] = (byKind[w.kind] ?? 0) + n;
    total += n;
    if (w.quantizable) quantizable += n;
  }
  return { total, byKind, quantizable };
}

export interface MemoryEstimate {
  bf16Bytes: number;
  /** NF4 with fp32 absmax per 64-element block; other tensors bf16. */
  nf4Bytes: number;
  /** NF4 with double quantization: u8 absmax per block + fp32 per 256 blocks (+ 256-entry map). */
  nf4DoubleQuantBytes: number;
}

const NF4_BLOCK = 64;
const NESTED_BLOCK = 256;

export function estimateWeightMemory(cfg: ModelConfig): MemoryEstimate {
  const { total, quantizable } = countParameters(cfg);
  const rest = total - quantizable;
  let nf4 = rest * 2;
  let nf4dq = rest * 2;
  for (const w of expectedWeights(cfg)) {
    if (!w.quantizable) continue;
    const n = numel(w.shape);
    const blocks = Math.ceil(n / NF4_BLOCK);
    const packed = Math.ceil(n / 2) + 16 * 4; // codes + quant_map
    nf4 += packed + blocks * 4;
    nf4dq += packed + blocks + Math.ceil(blocks / NESTED_BLOCK) * 4 + NESTED_BLOCK * 4 + 4;
  }
  return { bf16Bytes: total * 2, nf4Bytes: nf4, nf4DoubleQuantBytes: nf4dq };
}
