// A decoder forward written out plainly in float64 from HF's modeling code (Llama, Mistral, Qwen2, Qwen3, Gemma 2
// and Gemma 3 text), for
// tests of model families whose transformers dumps are not made yet: no backend, no tuna model code, only the
// config fields it is given and the weights by their HF names. Default RoPE only (theta^(-2i/D)).
import { openWeights } from "../../src/io/safetensors/checkpoint.ts";
import { decodeToFloat32 } from "../../src/io/safetensors/convert.ts";

export interface ReferenceConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  tieWordEmbeddings: boolean;
  /** Per-head RMSNorm of q and k before RoPE (Qwen3). */
  qkNorm: boolean;
  /** Each layer's sliding window, or null. */
  layerWindows: (number | null)[];
  // Gemma (Gemma2/Gemma3 modeling code): norms as x * (1 + w), embeddings times sqrt(hidden), norms on the
  // attention and MLP outputs, gelu(approximate="tanh"), the attention scale, soft-caps, local RoPE base.
  normPlusOne: boolean;
  embedScale: boolean;
  sandwichNorms: boolean;
  hiddenAct: "silu" | "gelu_tanh";
  attentionScale: number;
  attnSoftcap: number | null;
  finalSoftcap: number | null;
  localRopeTheta: number | null;
}

type Weights = Map<string, Float64Array>;

export async function readWeights(dir: string): Promise<Weights> {
  const source = await openWeights(dir);
  const out: Weights = new Map();
  for (const name of source.names()) out.set(name, Float64Array.from(decodeToFloat32(await source.readTensor(name), source.info(name).dtype)));
  await source.close();
  return out;
}

function get(w: Weights, name: string): Float64Array {
  const t = w.get(name);
  if (t === undefined) throw new Error(`reference: no tensor ${name}`);
  return t;
}

/** x (T, in) W^T (+ b): nn.Linear. */
function linear(x: Float64Array, T: number, inF: number, w: Float64Array, bias: Float64Array | undefined): Float64Array {
  const outF = w.length / inF;
  const y = new Float64Array(T * outF);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < outF; o++) {
      let s = bias?.[o] ?? 0;
      for (let i = 0; i < inF; i++) s += x[t * inF + i]! * w[o * inF + i]!;
      y[t * outF + o] = s;
    }
  }
  return y;
}

/** Columns [start, start + n) of a (T, width) matrix: Phi-3's fused outputs split as its modeling code slices them. */
function columns(x: Float64Array, T: number, width: number, start: number, n: number): Float64Array {
  const y = new Float64Array(T * n);
  for (let t = 0; t < T; t++) y.set(x.subarray(t * width + start, t * width + start + n), t * n);
  return y;
}

/** RMSNorm over rows of width n: x / sqrt(mean(x^2) + eps) * weight (Gemma: * (1 + weight)). */
function rmsnorm(x: Float64Array, n: number, weight: Float64Array, eps: number, plusOne = false): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / n; r++) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[r * n + i]! ** 2;
    const inv = 1 / Math.sqrt(ss / n + eps);
    for (let i = 0; i < n; i++) y[r * n + i] = x[r * n + i]! * inv * (plusOne ? 1 + weight[i]! : weight[i]!);
  }
  return y;
}

const geluTanh = (x: number): number => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

/** HF apply_rotary_pos_emb with rotate_half, in place on (T, heads, D) at positions 0..T-1. */
function rope(x: Float64Array, T: number, heads: number, D: number, theta: number): void {
  const half = D / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * D;
      for (let i = 0; i < half; i++) {
        const angle = t * theta ** (-(2 * i) / D);
        const [c, s] = [Math.cos(angle), Math.sin(angle)];
        const a = x[base + i]!;
        const b = x[base + i + half]!;
        x[base + i] = a * c - b * s;
        x[base + i + half] = b * c + a * s;
      }
    }
  }
}

/** Logits (T, V) of one document `ids` through the model in `weights`. */
export function referenceLogits(cfg: ReferenceConfig, weights: Weights, ids: readonly number[]): Float64Array {
  const { hiddenSize: C, numHeads: H, numKvHeads: KV, headDim: D, intermediateSize: F } = cfg;
  const T = ids.length;
  const embed = get(weights, "model.embed_tokens.weight");
  let x = new Float64Array(T * C);
  ids.forEach((id, t) => {
    x.set(embed.subarray(id * C, (id + 1) * C), t * C);
  });
  if (cfg.embedScale) x = x.map((v) => v * Math.fround(Math.sqrt(C)));
  const norm = (v: Float64Array, n: number, w: Float64Array): Float64Array => rmsnorm(v, n, w, cfg.rmsNormEps, cfg.normPlusOne);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = (name: string): Float64Array => get(weights, `model.layers.${l}.${name}`);
    const b = (name: string): Float64Array | undefined => weights.get(`model.layers.${l}.${name}`);
    const h1 = norm(x, C, p("input_layernorm.weight"));
    let q: Float64Array;
    let k: Float64Array;
    let v: Float64Array;
    if (weights.has(`model.layers.${l}.self_attn.qkv_proj.weight`)) {
      // Phi-3: qkv = qkv_proj(x); q, k, v = its first H*D, next KV*D and last KV*D columns.
      const qkv = linear(h1, T, C, p("self_attn.qkv_proj.weight"), undefined);
      const width = (H + 2 * KV) * D;
      q = columns(qkv, T, width, 0, H * D);
      k = columns(qkv, T, width, H * D, KV * D);
      v = columns(qkv, T, width, (H + KV) * D, KV * D);
    } else {
      q = linear(h1, T, C, p("self_attn.q_proj.weight"), b("self_attn.q_proj.bias"));
      k = linear(h1, T, C, p("self_attn.k_proj.weight"), b("self_attn.k_proj.bias"));
      v = linear(h1, T, C, p("self_attn.v_proj.weight"), b("self_attn.v_proj.bias"));
    }
    if (cfg.qkNorm) {
      q = norm(q, D, p("self_attn.q_norm.weight"));
      k = norm(k, D, p("self_attn.k_norm.weight"));
    }
    const window = cfg.layerWindows[l] ?? null;
    const theta = window !== null && cfg.localRopeTheta !== null ? cfg.localRopeTheta : cfg.ropeTheta;
    rope(q, T, H, D, theta);
    rope(k, T, KV, D, theta);
    const att = new Float64Array(T * H * D);
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / KV));
      for (let i = 0; i < T; i++) {
        const scores: number[] = [];
        for (let j = 0; j < T; j++) {
          if (j > i || (window !== null && j <= i - window)) {
            scores.push(-Infinity);
            continue;
          }
          let s = 0;
          for (let d = 0; d < D; d++) s += q[(i * H + h) * D + d]! * k[(j * KV + g) * D + d]!;
          const scaled = s * cfg.attentionScale;
          scores.push(cfg.attnSoftcap === null ? scaled : cfg.attnSoftcap * Math.tanh(scaled / cfg.attnSoftcap));
        }
        const max = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - max));
        const sum = e.reduce((a, c) => a + c, 0);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let j = 0; j < T; j++) acc += (e[j]! / sum) * v[(j * KV + g) * D + d]!;
          att[(i * H + h) * D + d] = acc;
        }
      }
    }
    let o = linear(att, T, H * D, p("self_attn.o_proj.weight"), b("self_attn.o_proj.bias"));
    if (cfg.sandwichNorms) o = norm(o, C, p("post_attention_layernorm.weight"));
    const x2 = x.map((val, i) => val + o[i]!);
    const h2 = norm(x2, C, p(cfg.sandwichNorms ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight"));
    let gate: Float64Array;
    let up: Float64Array;
    if (weights.has(`model.layers.${l}.mlp.gate_up_proj.weight`)) {
      // Phi-3: gate, up = gate_up_proj(x).chunk(2, dim=-1).
      const both = linear(h2, T, C, p("mlp.gate_up_proj.weight"), undefined);
      gate = columns(both, T, 2 * F, 0, F);
      up = columns(both, T, 2 * F, F, F);
    } else {
      gate = linear(h2, T, C, p("mlp.gate_proj.weight"), b("mlp.gate_proj.bias"));
      up = linear(h2, T, C, p("mlp.up_proj.weight"), b("mlp.up_proj.bias"));
    }
    const act = gate.map((gv, i) => (cfg.hiddenAct === "silu" ? gv / (1 + Math.exp(-gv)) : geluTanh(gv)) * up[i]!);
    let down = linear(act, T, F, p("mlp.down_proj.weight"), b("mlp.down_proj.bias"));
    if (cfg.sandwichNorms) down = norm(down, C, p("post_feedforward_layernorm.weight"));
    x = x2.map((val, i) => val + down[i]!);
  }
  const final = norm(x, C, get(weights, "model.norm.weight"));
  const head = cfg.tieWordEmbeddings ? embed : get(weights, "lm_head.weight");
  const logits = linear(final, T, C, head, undefined);
  const cap = cfg.finalSoftcap;
  return cap === null ? logits : logits.map((v) => cap * Math.tanh(v / cap));
}
