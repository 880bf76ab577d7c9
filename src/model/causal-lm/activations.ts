// The named activation slots of one forward pass (what backward needs), allocated per token count N.
// With gradient checkpointing only each block's input is kept per layer; one block's slots are shared.
import type { Backend, Tensor } from "../../backend/types.ts";
import { TunaError } from "../../util/errors.ts";
import type { ModelConfig } from "../../hf/config.ts";
import { PROJECTIONS, type Projection } from "../../hf/weights.ts";
import type { CausalLmParams } from "./params.ts";

export interface LoraSlots {
  xa: Tensor; // flat (N * R) dropout(x) @ A^T, viewed as (N, R) by the module
  mask: Tensor | null; // u8 (N, in) dropout keep-mask, when dropout > 0
  xd: Tensor | null; // (N, in) dropout(x), when dropout > 0
  /** Whether the last forward applied dropout (training) — the backward must match it. */
  dropoutApplied: boolean;
  /** DoRA: flat (N * out) W dropout(x) and scale * B A dropout(x), kept for the backward; null for plain LoRA. */
  dora: { base: Tensor; lora: Tensor } | null;
}

export interface BlockSlots {
  ln1: Tensor; // (N, C)
  rstd1: Tensor; // f32 (N)
  q: Tensor; // (N, H*D) after RoPE
  k: Tensor; // (N, KV*D) after RoPE
  v: Tensor; // (N, KV*D)
  att: Tensor; // (N, H*D)
  lse: Tensor; // f32 (N, H)
  x2: Tensor; // (N, C) residual after attention
  ln2: Tensor; // (N, C)
  rstd2: Tensor; // f32 (N)
  gate: Tensor; // (N, F)
  up: Tensor; // (N, F)
  h: Tensor; // (N, F) silu(gate) * up
  /** Qwen3: q and k as projected (before the per-head norm) and the norms' f32 (N, heads) rstd; null without. */
  qkNorm: { q: Tensor; k: Tensor; rstdQ: Tensor; rstdK: Tensor } | null;
  /** Gemma 2/3: the attention and MLP outputs before their norms, and the norms' f32 (N) rstd; null without. */
  sandwich: { o: Tensor; rstdO: Tensor; down: Tensor; rstdDown: Tensor } | null;
  lora: Partial<Record<Projection, LoraSlots>>;
}

export interface Activations {
  N: number;
  /** The allocation these tensors live in: itself, or for a smaller batch the larger set it views the first N rows of. */
  root: Activations;
  /** (L+1) residual stream: xs[l] is block l's input, xs[L] the final block output. */
  xs: Tensor[];
  /** One per layer, or a single shared set when checkpointing. */
  blocks: BlockSlots[];
  lnf: Tensor; // (N, C)
  rstdf: Tensor; // f32 (N)
  /** f32 (chunk rows, V): the logits of one chunk of rows at a time; the backward turns them into dlogits in place. */
  logits: Tensor;
  /** Which chunk `logits` holds now (-1: none, or overwritten by the backward). */
  logitsValidChunk: number;
  losses: Tensor; // f32 (N)
  // backward scratch
  dx: Tensor; // (N, C) gradient of the residual stream
  dx2: Tensor; // (N, C) its copy inside a block
  dln: Tensor; // (N, C)
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  datt: Tensor;
  dgate: Tensor;
  dup: Tensor;
  dh: Tensor;
  /** flat (N * max R) and (N, max in) scratch for the LoRA backward. */
  dxa: Tensor;
  dtmp: Tensor;
  /** Qwen3: (N, KV*D) gradient of the keys before their per-head norm; null without q/k norms. */
  dkRaw: Tensor | null;
  free(): void;
}

interface LoraShape {
  rank: number;
  inFeatures: number;
  outFeatures: number;
  dropout: boolean;
  dora: boolean;
  /** The projection whose dropped input this one shares (a fused module's later part), or null. */
  inputOf: Projection | null;
}

/** The LoRA slot shapes a block needs: one layer's, or the union over layers for shared slots. */
function loraShapes(params: CausalLmParams, layers: readonly number[]): Partial<Record<Projection, LoraShape>> {
  const shapes: Partial<Record<Projection, LoraShape>> = {};
  for (const l of layers) {
    for (const p of PROJECTIONS) {
      const lin = params.layers[l]!.proj[p];
      if (lin.lora === null) continue;
      const prev = shapes[p];
      shapes[p] = {
        rank: Math.max(prev?.rank ?? 0, lin.lora.rank),
        inFeatures: lin.inFeatures,
        outFeatures: lin.outFeatures,
        dropout: (prev?.dropout ?? false) || lin.lora.dropout > 0,
        dora: (prev?.dora ?? false) || lin.lora.dora !== null,
        inputOf: lin.lora.inputOf,
      };
    }
  }
  return shapes;
}

function allocBlock(
  backend: Backend,
  cfg: ModelConfig,
  lora: Partial<Record<Projection, LoraShape>>,
  tag: string,
  N: number,
  dtype: ActivationDtype,
): BlockSlots {
  const C = cfg.hiddenSize;
  const qDim = cfg.numHeads * cfg.headDim;
  const kvDim = cfg.numKvHeads * cfg.headDim;
  const F = cfg.intermediateSize;
  const a = (shape: number[], name: string): Tensor => backend.alloc(dtype, shape, `act.${tag}.${name}`);
  const f32 = (shape: number[], name: string): Tensor => backend.alloc("f32", shape, `act.${tag}.${name}`);
  const slots: Partial<Record<Projection, LoraSlots>> = {};
  for (const p of PROJECTIONS) {
    const shape = lora[p];
    if (shape === undefined) continue;
    // Parts of a fused module (Phi-3) drop out the input once: they share the first part's mask and xd.
    const owner = shape.inputOf === null ? undefined : slots[shape.inputOf];
    // xa is flat so a module of smaller rank than the slot can view its first N*R elements.
    slots[p] = {
      xa: a([N * shape.rank], `${p}.xa`),
      mask: owner !== undefined ? owner.mask : shape.dropout ? backend.alloc("u8", [N, shape.inFeatures], `act.${tag}.${p}.mask`) : null,
      xd: owner !== undefined ? owner.xd : shape.dropout ? a([N, shape.inFeatures], `${p}.xd`) : null,
      dropoutApplied: false,
      dora: shape.dora ? { base: a([N * shape.outFeatures], `${p}.dora_base`), lora: a([N * shape.outFeatures], `${p}.dora_lora`) } : null,
    };
  }
  return {
    ln1: a([N, C], "ln1"),
    rstd1: f32([N], "rstd1"),
    q: a([N, qDim], "q"),
    k: a([N, kvDim], "k"),
    v: a([N, kvDim], "v"),
    att: a([N, qDim], "att"),
    lse: f32([N, cfg.numHeads], "lse"),
    x2: a([N, C], "x2"),
    ln2: a([N, C], "ln2"),
    rstd2: f32([N], "rstd2"),
    gate: a([N, F], "gate"),
    up: a([N, F], "up"),
    h: a([N, F], "h"),
    ...familySlots(cfg, N, a, f32),
    lora: slots,
  };
}

type Alloc = (shape: number[], name: string) => Tensor;

/**
 * The slots only some families' blocks fill, for N tokens: Qwen3's and Gemma 3's q and k before their per-head
 * norms (and the norms' f32 rstd), Gemma's attention and MLP outputs before their sandwich norms. `act` makes
 * activations, `f32` statistics. Training, decoding and batched decoding allocate them alike.
 */
export function familySlots(cfg: ModelConfig, N: number, act: Alloc, f32: Alloc): Pick<BlockSlots, "qkNorm" | "sandwich"> {
  const C = cfg.hiddenSize;
  const qDim = cfg.numHeads * cfg.headDim;
  const kvDim = cfg.numKvHeads * cfg.headDim;
  return {
    qkNorm: cfg.qkNorm ? { q: act([N, qDim], "q_raw"), k: act([N, kvDim], "k_raw"), rstdQ: f32([N, cfg.numHeads], "rstd_q"), rstdK: f32([N, cfg.numKvHeads], "rstd_k") } : null,
    sandwich: cfg.sandwichNorms ? { o: act([N, C], "o_raw"), rstdO: f32([N], "rstd_o"), down: act([N, C], "down_raw"), rstdDown: f32([N], "rstd_down") } : null,
  };
}

/** The tensors a block's slots own, each once (a fused module's parts share the first part's mask and xd). */
function blockTensors(b: BlockSlots): Tensor[] {
  const out = [b.ln1, b.rstd1, b.q, b.k, b.v, b.att, b.lse, b.x2, b.ln2, b.rstd2, b.gate, b.up, b.h];
  if (b.qkNorm !== null) out.push(b.qkNorm.q, b.qkNorm.k, b.qkNorm.rstdQ, b.qkNorm.rstdK);
  if (b.sandwich !== null) out.push(b.sandwich.o, b.sandwich.rstdO, b.sandwich.down, b.sandwich.rstdDown);
  for (const s of Object.values(b.lora)) {
    out.push(s.xa);
    if (s.mask !== null) out.push(s.mask);
    if (s.xd !== null) out.push(s.xd);
    if (s.dora !== null) out.push(s.dora.base, s.dora.lora);
  }
  return [...new Set(out)];
}

/** Storage of activations and their gradients: f32 (the exact reference) or bf16 (as a bf16 HF model computes). */
export type ActivationDtype = "f32" | "bf16";

/**
 * Rows of logits computed at once: the (rows, V) f32 logits never exist for the whole batch, only per
 * chunk of about 16M elements (64 MiB), recomputed in the backward.
 */
export function logitsChunkRows(N: number, V: number): number {
  return Math.max(1, Math.min(N, Math.floor(LOGITS_CHUNK_ELEMENTS / V)));
}

const LOGITS_CHUNK_ELEMENTS = 1 << 24;

export interface ActivationOptions {
  checkpointing: boolean;
  dtype: ActivationDtype;
  /** Override of logitsChunkRows (tests). */
  logitsChunkRows?: number;
}

export function allocActivations(backend: Backend, params: CausalLmParams, N: number, options: ActivationOptions): Activations {
  const { checkpointing, dtype } = options;
  const cfg = params.cfg;
  const C = cfg.hiddenSize;
  const F = cfg.intermediateSize;
  const qDim = cfg.numHeads * cfg.headDim;
  const kvDim = cfg.numKvHeads * cfg.headDim;
  const f32 = (shape: number[], name: string): Tensor => backend.alloc("f32", shape, `act.${name}`);
  const a = (shape: number[], name: string): Tensor => backend.alloc(dtype, shape, `act.${name}`);
  const chunkRows = options.logitsChunkRows ?? logitsChunkRows(N, cfg.vocabSize);
  // With checkpointing one set of block slots serves every layer, sized for the union of their adapters.
  const all = params.layers.map((_, l) => l);
  const blocks = checkpointing
    ? [allocBlock(backend, cfg, loraShapes(params, all), "shared", N, dtype)]
    : all.map((l) => allocBlock(backend, cfg, loraShapes(params, [l]), String(l), N, dtype));
  let maxRank = 1;
  let maxIn = Math.max(C, F, qDim);
  for (const layer of params.layers) {
    for (const p of PROJECTIONS) {
      const lora = layer.proj[p].lora;
      if (lora !== null) maxRank = Math.max(maxRank, lora.rank);
      maxIn = Math.max(maxIn, layer.proj[p].inFeatures);
    }
  }
  const acts: Activations = {
    N,
    get root(): Activations {
      return acts;
    },
    xs: Array.from({ length: cfg.numLayers + 1 }, (_, l) => a([N, C], `x${l}`)),
    blocks,
    lnf: a([N, C], "lnf"),
    rstdf: f32([N], "rstdf"),
    logits: f32([chunkRows, cfg.vocabSize], "logits"),
    logitsValidChunk: -1,
    losses: f32([N], "losses"),
    dx: a([N, C], "dx"),
    dx2: a([N, C], "dx2"),
    dln: a([N, C], "dln"),
    dq: a([N, qDim], "dq"),
    dk: a([N, kvDim], "dk"),
    dv: a([N, kvDim], "dv"),
    datt: a([N, qDim], "datt"),
    dgate: a([N, F], "dgate"),
    dup: a([N, F], "dup"),
    dh: a([N, F], "dh"),
    dxa: a([N * maxRank], "dxa"),
    dtmp: a([N, maxIn], "dtmp"),
    dkRaw: cfg.qkNorm ? a([N, kvDim], "dk_raw") : null,
    free: () => {
      for (const t of [...acts.xs, acts.lnf, acts.rstdf, acts.logits, acts.losses, acts.dx, acts.dx2, acts.dln, acts.dq, acts.dk, acts.dv, acts.datt, acts.dgate, acts.dup, acts.dh, acts.dxa, acts.dtmp]) {
        backend.free(t);
      }
      if (acts.dkRaw !== null) backend.free(acts.dkRaw);
      for (const b of blocks) for (const t of blockTensors(b)) backend.free(t);
    },
  };
  return acts;
}

/**
 * The first N rows of every activation of `root` (allocated for at least N tokens): a packed batch of
 * fewer tokens reuses the allocation instead of freeing and allocating ~100 tensors of new sizes per step.
 * Flat LoRA scratch (N * R) keeps its first N * R elements; the logits chunk is shared as it is.
 */
export function viewActivations(backend: Backend, root: Activations, N: number): Activations {
  if (N > root.N) throw new TunaError("INTERNAL", `activations for ${root.N} tokens cannot hold ${N}`);
  if (N === root.N) return root;
  const rows = (t: Tensor): Tensor => backend.rows(t, 0, N);
  const flat = (t: Tensor): Tensor => backend.rows(t, 0, (t.size / root.N) * N);
  const block = (b: BlockSlots): BlockSlots => {
    const lora: Partial<Record<Projection, LoraSlots>> = {};
    for (const p of PROJECTIONS) {
      const s = b.lora[p];
      if (s === undefined) continue;
      lora[p] = {
        xa: flat(s.xa),
        mask: s.mask === null ? null : rows(s.mask),
        xd: s.xd === null ? null : rows(s.xd),
        dropoutApplied: false,
        dora: s.dora === null ? null : { base: flat(s.dora.base), lora: flat(s.dora.lora) },
      };
    }
    return {
      ln1: rows(b.ln1),
      rstd1: rows(b.rstd1),
      q: rows(b.q),
      k: rows(b.k),
      v: rows(b.v),
      att: rows(b.att),
      lse: rows(b.lse),
      x2: rows(b.x2),
      ln2: rows(b.ln2),
      rstd2: rows(b.rstd2),
      gate: rows(b.gate),
      up: rows(b.up),
      h: rows(b.h),
      qkNorm: b.qkNorm === null ? null : { q: rows(b.qkNorm.q), k: rows(b.qkNorm.k), rstdQ: rows(b.qkNorm.rstdQ), rstdK: rows(b.qkNorm.rstdK) },
      sandwich: b.sandwich === null ? null : { o: rows(b.sandwich.o), rstdO: rows(b.sandwich.rstdO), down: rows(b.sandwich.down), rstdDown: rows(b.sandwich.rstdDown) },
      lora,
    };
  };
  return {
    N,
    root,
    xs: root.xs.map(rows),
    blocks: root.blocks.map(block),
    lnf: rows(root.lnf),
    rstdf: rows(root.rstdf),
    logits: root.logits,
    logitsValidChunk: -1,
    losses: rows(root.losses),
    dx: rows(root.dx),
    dx2: rows(root.dx2),
    dln: rows(root.dln),
    dq: rows(root.dq),
    dk: rows(root.dk),
    dv: rows(root.dv),
    datt: rows(root.datt),
    dgate: rows(root.dgate),
    dup: rows(root.dup),
    dh: rows(root.dh),
    dxa: flat(root.dxa),
    dtmp: rows(root.dtmp),
    dkRaw: root.dkRaw === null ? null : rows(root.dkRaw),
    free: () => {
      root.free();
    },
  };
}
