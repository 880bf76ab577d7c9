// The decoder-only causal LM every supported family shares (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3: each a
// declaration in src/hf/families.ts of the features it switches on) on a backend: forward to token losses, backward into the trainable
// gradient buffer, with optional gradient checkpointing (recompute each block from its saved input).
import type { Backend, Tensor } from "../../backend/types.ts";
import { createRng, type Rng } from "../../util/random.ts";
import { TunaError } from "../../util/errors.ts";
import { IGNORE_INDEX, type Batch } from "../../data/batch.ts";
import { allocActivations, viewActivations, type ActivationDtype, type Activations } from "./activations.ts";
import { blockBackward, blockForward, normOptions, type SequenceInputs } from "./block.ts";
import type { LinearScratch } from "./linear.ts";
import type { CausalLmParams, TokenRows } from "./params.ts";
import type { ForwardOptions, ForwardResult, LayerResidency, SpanScale, TrainingModel, UploadedBatch } from "../types.ts";
import { ropeInvFreq } from "./rope-freqs.ts";
import { PROJECTIONS } from "../../hf/weights.ts";
import { bf16BitsToF32, f32ToBf16Bits } from "../../util/half.ts";

export interface CausalLm {
  backend: Backend;
  params: CausalLmParams;
  invFreq: Tensor; // f32 (D/2)
  /** Each layer's RoPE frequencies: invFreq, or (Gemma 3's sliding layers) the local base's. */
  layerInvFreq: Tensor[];
  checkpointing: boolean;
  /** Dropout masks come from here; each layer's starting state is kept so recomputation matches. */
  dropoutRng: Rng;
  /** Storage dtype of activations and their gradients. */
  activationDtype: ActivationDtype;
  /** Rows of logits per chunk (tests force small chunks; default from logitsChunkRows). */
  logitsChunkRows: number | undefined;
  /** Scratch for dequantized 4-bit weights and DoRA's adapted weight, in the activation dtype (null when neither is used). */
  dequantScratch: Tensor | null;
  /** bf16 copy of the trainable buffer (bf16 activations only), refreshed at every forward. */
  lowpParams: Tensor | null;
  /** What the linear layers get: the dequant scratch and the bf16 twins of trainable tensors. */
  linearScratch: LinearScratch;
  acts: Activations | null;
  layerRngStates: [number, number, number, number][];
  /** Whether the last forward was a training one (dropout applied); its backward recomputes alike. */
  lastForwardTraining: boolean;
  /** Brings each layer's weights in before use and lets them go after (sharded parameters); null: always resident. */
  residency: LayerResidency | null;
}

export interface DeviceBatch extends SequenceInputs {
  N: number;
  /** The ids on the host too: positions of tokens with trained embedding rows are found from them. */
  hostIds: Int32Array;
  /** Rows of the (B, T) batch as [start, length]: NEFTune scales its noise by each row's length. */
  rowSpans: [number, number][];
  ids: Tensor; // i32 (N)
  targets: Tensor; // i32 (N)
  trainedTokens: number;
}

export interface CausalLmOptions {
  checkpointing: boolean;
  seed: number;
  /** Activation storage (default f32, the exact reference; bf16 halves activation memory as HF bf16 does). */
  activationDtype?: ActivationDtype;
  logitsChunkRows?: number;
}

export function createCausalLm(backend: Backend, params: CausalLmParams, options: CausalLmOptions): CausalLm {
  const activationDtype = options.activationDtype ?? "f32";
  const cfg = params.cfg;
  const invFreq = backend.alloc("f32", [cfg.headDim / 2], "rope.inv_freq");
  backend.upload(invFreq, ropeInvFreq(cfg));
  // Gemma 3: the sliding layers rotate with their own base and no scaling.
  let localInvFreq: Tensor | null = null;
  if (cfg.localRopeTheta !== null) {
    localInvFreq = backend.alloc("f32", [cfg.headDim / 2], "rope.inv_freq.local");
    backend.upload(localInvFreq, ropeInvFreq({ ...cfg, ropeTheta: cfg.localRopeTheta, ropeScaling: { type: "default" } }));
  }
  const layerInvFreq = cfg.layerWindows.map((w) => (w !== null && localInvFreq !== null ? localInvFreq : invFreq));
  // 4-bit weights are dequantized here per GEMM; DoRA builds its adapted weight W + s B A here for the row norms.
  let maxQuant = 0;
  for (const layer of params.layers) {
    for (const lin of Object.values(layer.proj)) {
      if (lin.quant !== null || lin.lora?.dora != null) maxQuant = Math.max(maxQuant, lin.inFeatures * lin.outFeatures);
    }
  }
  const dequantScratch = maxQuant > 0 ? backend.alloc(activationDtype, [maxQuant], "dequant.scratch") : null;
  // With bf16 activations the GEMMs read bf16 twins of the f32 trainable tensors (one conversion of the
  // whole buffer per forward instead of one per GEMM).
  const trainable = params.trainable;
  const lowpParams = activationDtype === "bf16" && trainable.total > 0 ? backend.alloc("bf16", [trainable.total], "trainable.params.bf16") : null;
  const lowp = new Map<Tensor, Tensor>();
  if (lowpParams !== null) {
    for (const view of trainable.byName.values()) {
      lowp.set(view.param, backend.view(backend.rows(lowpParams, view.entry.offset, view.entry.size), view.entry.shape));
    }
  }
  return {
    backend,
    params,
    invFreq,
    layerInvFreq,
    checkpointing: options.checkpointing,
    dropoutRng: createRng(options.seed),
    activationDtype,
    logitsChunkRows: options.logitsChunkRows,
    dequantScratch,
    lowpParams,
    linearScratch: { dequant: dequantScratch, lowp: lowpParams === null ? undefined : lowp },
    acts: null,
    layerRngStates: [],
    lastForwardTraining: false,
    residency: null,
  };
}

/** Frees what the model allocated beside its params (activations, scratch, the bf16 twin buffer). */
export function freeCausalLm(model: CausalLm): void {
  const be = model.backend;
  model.acts?.free();
  model.acts = null;
  for (const t of new Set([model.invFreq, ...model.layerInvFreq])) be.free(t);
  if (model.dequantScratch !== null) be.free(model.dequantScratch);
  if (model.lowpParams !== null) be.free(model.lowpParams);
}

export function uploadBatch(model: CausalLm, batch: Batch): DeviceBatch {
  const be = model.backend;
  const N = batch.ids.length;
  const V = model.params.cfg.vocabSize;
  // Ids first: a bad id also shows up as a bad label one position earlier, and the id is the cause.
  batch.ids.forEach((id, i) => {
    if (id < 0 || id >= V) throw new TunaError("CONFIG_INVALID", `token id ${id} at position ${i} is outside the model's vocabulary (${V})`);
  });
  batch.targets.forEach((target, i) => {
    if (target !== IGNORE_INDEX && (target < 0 || target >= V)) {
      throw new TunaError("CONFIG_INVALID", `label ${target} at position ${i} is outside the model's vocabulary (${V}) and is not -100`);
    }
  });
  const up = (data: Int32Array, name: string): Tensor => {
    const t = be.alloc("i32", [data.length], name);
    be.upload(t, data);
    return t;
  };
  let trained = 0;
  for (const t of batch.targets) if (t !== IGNORE_INDEX) trained++;
  return {
    N,
    hostIds: batch.ids,
    rowSpans: batch.rows,
    ids: up(batch.ids, "batch.ids"),
    targets: up(batch.targets, "batch.targets"),
    positions: up(batch.positions, "batch.positions"),
    cuSeqlens: up(batch.cuSeqlens, "batch.cu_seqlens"),
    invFreq: model.invFreq,
    trainedTokens: trained,
  };
}

export function freeBatch(model: CausalLm, b: DeviceBatch): void {
  for (const t of [b.ids, b.targets, b.positions, b.cuSeqlens]) model.backend.free(t);
}

/**
 * Activations for N tokens: the current set, a view of the first N rows of a larger one, or a new
 * allocation when N is the largest so far (packed batches vary in length; the set only grows).
 */
function activationsFor(model: CausalLm, N: number): Activations {
  if (model.acts !== null && model.acts.N === N) return model.acts;
  if (model.acts !== null && model.acts.root.N >= N) {
    model.acts = viewActivations(model.backend, model.acts.root, N);
    return model.acts;
  }
  model.acts?.free();
  model.acts = allocActivations(model.backend, model.params, N, {
    checkpointing: model.checkpointing,
    dtype: model.activationDtype,
    ...(model.logitsChunkRows === undefined ? {} : { logitsChunkRows: model.logitsChunkRows }),
  });
  return model.acts;
}

export type { ForwardOptions } from "../types.ts";

/** The causal LM behind the trainer's model interface. */
export function asTrainingModel(model: CausalLm): TrainingModel {
  // Every UploadedBatch the trainer hands back is one this adapter made.
  const own = (b: UploadedBatch): DeviceBatch => b as DeviceBatch;
  return {
    backend: model.backend,
    trainable: model.params.trainable,
    get dropoutRng() {
      return model.dropoutRng;
    },
    set dropoutRng(rng: Rng) {
      model.dropoutRng = rng;
    },
    upload: (batch) => uploadBatch(model, batch),
    forward: (batch, options) => forward(model, own(batch), options),
    backward: (batch, gradScale, layerDone, spans) => backward(model, own(batch), gradScale, layerDone, spans),
    free: (batch) => {
      freeBatch(model, own(batch));
    },
  };
}

/** Runs the forward pass; returns the sum of token losses (f64) and the number of trained tokens. */
export async function forward(model: CausalLm, batch: DeviceBatch, options: ForwardOptions = {}): Promise<ForwardResult> {
  if (options.adapters !== false) return forwardPass(model, batch, options);
  // PEFT's disable_adapter (DPO's reference): the base alone, with no dropout or noise. The LoRA modules and
  // trained token rows are detached for this pass; the activations are sized with them first, so the next
  // (adapted) pass finds its LoRA slots.
  const { params } = model;
  activationsFor(model, batch.N);
  const loras = params.layers.map((layer) => PROJECTIONS.map((p) => layer.proj[p].lora));
  const { embedRows, lmHeadRows } = params;
  for (const layer of params.layers) for (const p of PROJECTIONS) layer.proj[p].lora = null;
  params.embedRows = null;
  params.lmHeadRows = null;
  try {
    return await forwardPass(model, batch, { training: false });
  } finally {
    params.layers.forEach((layer, l) => {
      PROJECTIONS.forEach((p, j) => (layer.proj[p].lora = loras[l]![j]!));
    });
    params.embedRows = embedRows;
    params.lmHeadRows = lmHeadRows;
  }
}

async function forwardPass(model: CausalLm, batch: DeviceBatch, options: ForwardOptions): Promise<ForwardResult> {
  const be = model.backend;
  const { params } = model;
  const cfg = params.cfg;
  const acts = activationsFor(model, batch.N);
  if (model.lowpParams !== null) be.copy(model.lowpParams, params.trainable.params);
  be.embeddingForward(acts.xs[0]!, batch.ids, params.embed);
  const embedRows = params.embedRows;
  if (embedRows !== null) {
    for (const [p, j] of trainedRowPositions(embedRows, batch.hostIds)) be.copy(be.rows(acts.xs[0]!, p, 1), be.rows(embedRows.param, j, 1));
  }
  // NEFTune's hook sees embed_tokens' output: Gemma 3's embedding module scales inside it, Gemma 2's model after it.
  const embedScale = embeddingScale(model);
  const scaledInModule = cfg.family === "gemma3";
  if (embedScale !== 1 && scaledInModule) be.scale(acts.xs[0]!, embedScale);
  if (options.neftune !== undefined) addNeftuneNoise(model, acts, batch, options.neftune);
  if (embedScale !== 1 && !scaledInModule) be.scale(acts.xs[0]!, embedScale);
  model.layerRngStates = [];
  model.lastForwardTraining = options.training === true;
  for (let l = 0; l < cfg.numLayers; l++) {
    model.layerRngStates.push(model.dropoutRng.state());
    const slots = acts.blocks[model.checkpointing ? 0 : l]!;
    const rng = model.lastForwardTraining ? model.dropoutRng : null;
    // Next: the following layer, or after the last one the same layer again, which the backward starts with.
    await model.residency?.acquire(l, l + 1 < cfg.numLayers ? l + 1 : options.training === true ? l : undefined);
    blockForward(be, cfg, l, params.layers[l]!, slots, acts.xs[l]!, acts.xs[l + 1]!, { ...batch, invFreq: model.layerInvFreq[l]! }, model.linearScratch, rng);
    model.residency?.release(l);
  }
  be.rmsnormForward(acts.lnf, acts.rstdf, acts.xs[cfg.numLayers]!, params.norm, cfg.rmsNormEps, normOptions(cfg));
  const head = outputEmbedding(model);
  forEachLogitsChunk(be, acts, (chunk, start, rows, logits) => {
    be.matmul(logits, be.rows(acts.lnf, start, rows), head, { transB: true });
    if (cfg.finalSoftcap !== null) be.softcap(logits, cfg.finalSoftcap);
    be.crossEntropyForward(be.rows(acts.losses, start, rows), logits, be.rows(batch.targets, start, rows));
    acts.logitsValidChunk = chunk;
  });
  const losses = await be.downloadF32(acts.losses);
  let sum = 0;
  for (const v of losses) sum += v;
  return { lossSum: sum, tokens: batch.trainedTokens, tokenLosses: losses };
}

/**
 * Backward of the last forward: gradients of (gradScale * sum of token losses) accumulate into the
 * trainable gradient buffer. gradScale = 1 / (trained tokens over all accumulated micro-batches).
 */
export async function backward(model: CausalLm, batch: DeviceBatch, gradScale: number, layerDone?: (layer: number) => void, spans?: readonly SpanScale[]): Promise<void> {
  const be = model.backend;
  const { params } = model;
  const cfg = params.cfg;
  const acts = model.acts;
  if (acts === null || acts.N !== batch.N) throw new TunaError("INTERNAL", "backward called without a matching forward");
  const head = params.effectiveLmHead ?? params.lmHead;
  const headRows = params.lmHeadRows;
  forEachLogitsChunk(be, acts, (chunk, start, rows, logits) => {
    const lnf = be.rows(acts.lnf, start, rows);
    // The last forward chunk is still in the buffer; the others are recomputed (one extra (rows, C, V) GEMM).
    if (acts.logitsValidChunk !== chunk) {
      be.matmul(logits, lnf, head, { transB: true });
      if (cfg.finalSoftcap !== null) be.softcap(logits, cfg.finalSoftcap);
    }
    acts.logitsValidChunk = -1;
    const dlogits = logits;
    // With Gemma 2's final soft-cap the gradient goes on through the cap to the raw logits.
    be.crossEntropyBackward(dlogits, logits, be.rows(batch.targets, start, rows), gradScale, cfg.finalSoftcap ?? undefined);
    // Each span's token losses weigh `scale` times as much (DPO: each sequence's weight in the pair loss).
    for (const s of spans ?? []) {
      const lo = Math.max(s.start, start);
      const hi = Math.min(s.start + s.count, start + rows);
      if (hi > lo) be.scale(be.rows(dlogits, lo - start, hi - lo), s.scale);
    }
    be.matmul(be.rows(acts.dln, start, rows), dlogits, head);
    if (params.dLmHead !== null) be.matmul(params.dLmHead, dlogits, lnf, { transA: true, accumulate: true });
    // The gradient of the whole (V, C) matrix, of which only the trained rows are kept.
    if (headRows !== null && params.lmHeadGradScratch !== null) {
      be.matmul(params.lmHeadGradScratch, dlogits, lnf, { transA: true, accumulate: start > 0 });
    }
  });
  if (headRows !== null && params.lmHeadGradScratch !== null) {
    headRows.indices.forEach((id, j) => {
      const g = be.rows(headRows.grad, j, 1);
      be.add(g, g, be.rows(params.lmHeadGradScratch!, id, 1));
    });
  }
  be.rmsnormBackward(acts.dx, params.dNorm, acts.dln, acts.xs[cfg.numLayers]!, params.norm, acts.rstdf, false, normOptions(cfg));
  const grads = { ...acts, ...model.linearScratch };
  for (let l = cfg.numLayers - 1; l >= 0; l--) {
    const layer = params.layers[l]!;
    const slots = acts.blocks[model.checkpointing ? 0 : l]!;
    await model.residency?.acquire(l, l > 0 ? l - 1 : undefined);
    if (model.checkpointing) {
      // Recompute block l from its saved input with the same dropout masks; its output xs[l+1] is
      // no longer needed (block l+1's backward is done), so it is rewritten with identical values.
      const rng = model.lastForwardTraining ? createRng(0, model.layerRngStates[l]) : null;
      blockForward(be, cfg, l, layer, slots, acts.xs[l]!, acts.xs[l + 1]!, { ...batch, invFreq: model.layerInvFreq[l]! }, model.linearScratch, rng);
    }
    blockBackward(be, cfg, l, layer, slots, acts.xs[l]!, acts.dx, { ...batch, invFreq: model.layerInvFreq[l]! }, grads);
    model.residency?.release(l);
    layerDone?.(l);
  }
  // Gemma's embedding scale is a factor on the looked-up rows: their gradient carries it too.
  const embedScale = embeddingScale(model);
  if (embedScale !== 1) be.scale(acts.dx, embedScale);
  if (params.dEmbed !== null) be.embeddingBackward(params.dEmbed, acts.dx, batch.ids);
  const embedRows = params.embedRows;
  if (embedRows !== null) {
    for (const [p, j] of trainedRowPositions(embedRows, batch.hostIds)) {
      const g = be.rows(embedRows.grad, j, 1);
      be.add(g, g, be.rows(acts.dx, p, 1));
    }
  }
}

/**
 * Gemma's factor on the embeddings: sqrt(hidden_size) as a tensor of the activations' dtype (HF builds it with the
 * hidden states' dtype, so bf16 rounds it); 1 for the other families.
 */
export function embeddingScale(model: { params: CausalLmParams; activationDtype: ActivationDtype }): number {
  const cfg = model.params.cfg;
  if (!cfg.embedScale) return 1;
  const value = Math.sqrt(cfg.hiddenSize);
  return model.activationDtype === "bf16" ? bf16BitsToF32(f32ToBf16Bits(value)) : Math.fround(value);
}

/**
 * transformers' neftune_post_forward_hook: L is the length of the row the token sits in (the padded
 * length of a padded batch, the whole flat row of a padding-free one), d the hidden size.
 */
function addNeftuneNoise(model: CausalLm, acts: Activations, batch: DeviceBatch, neftune: { alpha: number; rng: Rng }): void {
  const C = model.params.cfg.hiddenSize;
  const noise = new Float32Array(batch.N * C);
  for (const [start, length] of batch.rowSpans) {
    const mag = neftune.alpha / Math.sqrt(length * C);
    for (let i = start * C; i < (start + length) * C; i++) noise[i] = (2 * neftune.rng.uniform() - 1) * mag;
  }
  // dln is backward scratch of the same shape (N, C), free during the forward.
  model.backend.upload(acts.dln, noise);
  model.backend.add(acts.xs[0]!, acts.xs[0]!, acts.dln);
}

/** [position, row] pairs of the tokens in the batch whose embedding row is trained. */
function trainedRowPositions(rows: TokenRows, ids: Int32Array): [number, number][] {
  const out: [number, number][] = [];
  ids.forEach((id, p) => {
    const j = rows.rowOf.get(id);
    if (j !== undefined) out.push([p, j]);
  });
  return out;
}

/** The lm_head the logits use: the frozen matrix, or a copy with the trained rows substituted. */
function outputEmbedding(model: CausalLm): Tensor {
  const { params } = model;
  const rows = params.lmHeadRows;
  if (rows === null || params.effectiveLmHead === null) return params.lmHead;
  const be = model.backend;
  be.copy(params.effectiveLmHead, params.lmHead);
  rows.indices.forEach((id, j) => {
    be.copy(be.rows(params.effectiveLmHead!, id, 1), be.rows(rows.param, j, 1));
  });
  return params.effectiveLmHead;
}

/** Runs body over the chunks of rows of the logits buffer, in order. */
function forEachLogitsChunk(be: Backend, acts: Activations, body: (chunk: number, start: number, rows: number, logits: Tensor) => void): void {
  const chunkRows = acts.logits.shape[0]!;
  for (let chunk = 0, start = 0; start < acts.N; chunk++, start += chunkRows) {
    const rows = Math.min(chunkRows, acts.N - start);
    const logits = rows === chunkRows ? acts.logits : be.rows(acts.logits, 0, rows);
    body(chunk, start, rows, logits);
  }
}

/**
 * Logits of the last forward, f32 (N, V), for tests and evaluation. Only a batch whose logits fit in one
 * chunk keeps them all (the forward keeps one chunk of rows at a time).
 */
export async function lastLogits(model: CausalLm): Promise<Float32Array> {
  const acts = model.acts;
  if (acts === null || acts.logitsValidChunk !== 0) throw new TunaError("INTERNAL", "no forward has run, or the backward has used the logits");
  if (acts.logits.shape[0]! < acts.N) {
    throw new TunaError("INTERNAL", `lastLogits: ${acts.N} rows do not fit one logits chunk of ${acts.logits.shape[0]!} rows`);
  }
  return model.backend.downloadF32(acts.N === acts.logits.shape[0]! ? acts.logits : model.backend.rows(acts.logits, 0, acts.N));
}
