// Incremental forward of the causal LM for generation: a per-layer KV cache, new tokens at
// absolute positions after the cached ones, and the logits of the last new token only (no backward).
import type { Backend, Tensor } from "../../backend/types.ts";
import { TunaError } from "../../util/errors.ts";
import type { ModelConfig } from "../../hf/config.ts";
import { PROJECTIONS, type Projection } from "../../hf/weights.ts";
import { familySlots, type LoraSlots } from "./activations.ts";
import { attentionOptions, blockForwardWith, normOptions } from "./block.ts";
import type { LinearScratch } from "./linear.ts";
import { embeddingScale, type CausalLm } from "./model.ts";
import type { CausalLmParams } from "./params.ts";

/** Keys and values of the tokens seen so far, one (Tmax, KV, D) pair per layer, rows 0..length-1 in use. */
export interface KvCache {
  capacity: number; // Tmax
  length: number;
  keys: Tensor[]; // L x (Tmax, KV, D) f32, after RoPE
  values: Tensor[]; // L x (Tmax, KV, D) f32
}

/** Per-call activations for up to `rows` new tokens (Q <= rows); views of the first Q rows are taken per call. */
interface StepBuffers {
  rows: number;
  ids: Tensor; // i32 (rows)
  positions: Tensor; // i32 (rows)
  x: [Tensor, Tensor]; // (rows, C) residual stream, ping-pong between layers
  ln: Tensor; // (rows, C)
  rstd: Tensor; // f32 (rows)
  q: Tensor; // (rows, H*D)
  k: Tensor; // (rows, KV*D)
  v: Tensor; // (rows, KV*D)
  att: Tensor; // (rows, H*D)
  x2: Tensor; // (rows, C)
  gate: Tensor; // (rows, F)
  up: Tensor; // (rows, F)
  h: Tensor; // (rows, F)
  lnf: Tensor; // (1, C)
  rstdf: Tensor; // f32 (1)
  logits: Tensor; // f32 (1, V)
  /** Qwen3: q and k before their per-head norms, and the norms' rstd (rows, heads). */
  qkNorm: { q: Tensor; k: Tensor; rstdQ: Tensor; rstdK: Tensor } | null;
  /** Gemma 2/3: attention and MLP outputs before their norms, and the norms' rstd (rows). */
  sandwich: { o: Tensor; rstdO: Tensor; down: Tensor; rstdDown: Tensor } | null;
}

export interface Decoder {
  model: CausalLm;
  cache: KvCache;
  /** The token ids whose keys and values are cached, in order (cache.length of them). */
  tokens: number[];
  /** The output embedding, with trained token rows substituted as of createDecoder. */
  lmHead: Tensor;
  buffers: StepBuffers | null;
  /** DoRA's row norms (weights only) are computed by the first call and reused by the next ones. */
  doraNormsReady: boolean;
}

/** A decoder over `model` with room for `capacity` tokens (the cache grows on demand). */
export function createDecoder(model: CausalLm, capacity = 256): Decoder {
  const cfg = model.params.cfg;
  const cache: KvCache = { capacity: 0, length: 0, keys: [], values: [] };
  const decoder: Decoder = { model, cache, tokens: [], lmHead: outputEmbedding(model.backend, model.params), buffers: null, doraNormsReady: false };
  allocCache(model.backend, cfg, cache, Math.max(1, capacity));
  return decoder;
}

function allocCache(be: Backend, cfg: ModelConfig, cache: KvCache, capacity: number): void {
  const shape = [capacity, cfg.numKvHeads, cfg.headDim];
  const keys = Array.from({ length: cfg.numLayers }, (_, l) => be.alloc("f32", shape, `kv.${l}.keys`));
  const values = Array.from({ length: cfg.numLayers }, (_, l) => be.alloc("f32", shape, `kv.${l}.values`));
  // Rows already in use move over; rows beyond them are written before they are read.
  for (let l = 0; l < cfg.numLayers && cache.length > 0; l++) {
    for (const [dst, src] of [[keys[l]!, cache.keys[l]!], [values[l]!, cache.values[l]!]] as const) {
      const to = be.rows(dst, 0, cache.length);
      be.copy(to, be.rows(src, 0, cache.length));
      be.free(to);
    }
  }
  for (const t of [...cache.keys, ...cache.values]) be.free(t);
  cache.keys = keys;
  cache.values = values;
  cache.capacity = capacity;
}

/** Makes room for `tokens` cached tokens in all (at least doubling, so appends stay amortized O(1)). */
export function reserveCache(decoder: Decoder, tokens: number): void {
  const { cache, model } = decoder;
  if (tokens <= cache.capacity) return;
  allocCache(model.backend, model.params.cfg, cache, Math.max(tokens, 2 * cache.capacity));
}

/**
 * How many leading tokens of `prompt` the decoder's cache already holds, leaving at least one prompt token to
 * run (its logits are what the next token is picked from).
 */
export function cachedPrefix(decoder: Decoder, prompt: readonly number[]): number {
  const cached = decoder.tokens;
  let common = 0;
  while (common < cached.length && common < prompt.length - 1 && cached[common] === prompt[common]) common++;
  return common;
}

/** Forgets every cached token from `length` on (the next call continues at position `length`). */
export function truncateCache(decoder: Decoder, length: number): void {
  if (!Number.isSafeInteger(length) || length < 0 || length > decoder.cache.length) {
    throw new TunaError("INTERNAL", `truncateCache: length ${length} is not within the ${decoder.cache.length} cached tokens`);
  }
  decoder.cache.length = length;
  decoder.tokens.length = length;
}

export function freeDecoder(decoder: Decoder): void {
  const be = decoder.model.backend;
  for (const t of [...decoder.cache.keys, ...decoder.cache.values]) be.free(t);
  decoder.cache.keys = [];
  decoder.cache.values = [];
  decoder.cache.capacity = 0;
  decoder.cache.length = 0;
  decoder.tokens.length = 0;
  if (decoder.buffers !== null) freeBuffers(be, decoder.buffers);
  decoder.buffers = null;
}

/** Longest run of new tokens in one pass; a longer prompt is prefilled in pieces to bound activation memory. */
export const PREFILL_CHUNK = 512;

/**
 * Runs the Q new tokens `ids` (Q >= 1, at positions cache.length..cache.length+Q-1) through the model,
 * appends their keys and values to the cache, and returns the f32 logits (V) of the last of them.
 * Q > 1 is a prefill (a prompt, or the part of it not cached yet); Q = 1 is one decoding step.
 */
export async function decodeForward(decoder: Decoder, ids: readonly number[]): Promise<Float32Array> {
  if (ids.length > PREFILL_CHUNK) {
    const head = ids.length - PREFILL_CHUNK;
    for (let start = 0; start < head; start += PREFILL_CHUNK) await decodeForward(decoder, ids.slice(start, Math.min(start + PREFILL_CHUNK, head)));
    return decodeForward(decoder, ids.slice(head));
  }
  const { model, cache } = decoder;
  const be = model.backend;
  const { params } = model;
  const cfg = params.cfg;
  const Q = ids.length;
  if (Q === 0) throw new TunaError("INTERNAL", "decodeForward needs at least one new token");
  ids.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0 || id >= cfg.vocabSize) {
      throw new TunaError("CONFIG_INVALID", `token id ${id} at position ${cache.length + i} is outside the model's vocabulary (${cfg.vocabSize})`);
    }
  });
  const past = cache.length;
  checkPositions(cfg, past + Q);
  reserveCache(decoder, past + Q);
  const buf = buffersFor(decoder, Q);
  // Views made for this call are freed at its end, so a long generation does not pile up handles.
  const views: Tensor[] = [];
  const take = (t: Tensor, shape?: readonly number[]): Tensor => {
    const r = be.rows(t, 0, Q);
    views.push(r);
    if (shape === undefined) return r;
    const v = be.view(r, shape);
    views.push(v);
    return v;
  };
  const lora = loraSlots(be, params, Q);
  try {
    const idsT = take(buf.ids);
    be.upload(idsT, Int32Array.from(ids));
    const positions = take(buf.positions);
    be.upload(positions, Int32Array.from({ length: Q }, (_, i) => past + i));
    const step: StepViews = {
      ln: take(buf.ln),
      rstd: take(buf.rstd),
      q: take(buf.q),
      k: take(buf.k),
      v: take(buf.v),
      att: take(buf.att),
      x2: take(buf.x2),
      gate: take(buf.gate),
      up: take(buf.up),
      h: take(buf.h),
      qkNorm: buf.qkNorm === null ? null : { q: take(buf.qkNorm.q), k: take(buf.qkNorm.k), rstdQ: take(buf.qkNorm.rstdQ), rstdK: take(buf.qkNorm.rstdK) },
      sandwich: buf.sandwich === null ? null : { o: take(buf.sandwich.o), rstdO: take(buf.sandwich.rstdO), down: take(buf.sandwich.down), rstdDown: take(buf.sandwich.rstdDown) },
      positions,
      invFreq: model.invFreq,
    };
    const xs = [take(buf.x[0]), take(buf.x[1])] as const;
    be.embeddingForward(xs[0], idsT, params.embed);
    const embedRows = params.embedRows;
    if (embedRows !== null) {
      ids.forEach((id, p) => {
        const j = embedRows.rowOf.get(id);
        if (j === undefined) return;
        const dst = be.rows(xs[0], p, 1);
        const src = be.rows(embedRows.param, j, 1);
        be.copy(dst, src);
        views.push(dst, src);
      });
    }
    const scratch: LinearScratch = { dequant: model.dequantScratch, reuseDoraNorms: decoder.doraNormsReady };
    const embedScale = embeddingScale(model);
    if (embedScale !== 1) be.scale(xs[0], embedScale);
    const attentionScale = cfg.attentionScale;
    for (let l = 0; l < cfg.numLayers; l++) {
      const cached = {
        keys: be.rows(cache.keys[l]!, past, Q),
        values: be.rows(cache.values[l]!, past, Q),
      };
      views.push(cached.keys, cached.values);
      const layer = params.layers[l]!;
      const kCache = cache.keys[l]!;
      const vCache = cache.values[l]!;
      // The training block, attending to the cache: this step's keys and values go into their cache rows first.
      const slots = {
        ...step,
        ln1: step.ln,
        rstd1: step.rstd,
        ln2: step.ln,
        rstd2: step.rstd,
        lora: Object.fromEntries(PROJECTIONS.filter((p) => layer.proj[p].lora !== null && lora[p] !== undefined).map((p) => [p, lora[p]!])),
      };
      blockForwardWith(be, cfg, layer, slots, xs[l % 2]!, xs[(l + 1) % 2]!, { positions: step.positions, invFreq: model.layerInvFreq[l]! }, (att, q, k, v) => {
        be.copy(cached.keys, k);
        be.copy(cached.values, v);
        be.attentionDecode(att, q, kCache, vCache, past, attentionScale, attentionOptions(cfg, l));
      }, scratch, null);
    }
    const last = be.rows(xs[cfg.numLayers % 2]!, Q - 1, 1);
    views.push(last);
    be.rmsnormForward(buf.lnf, buf.rstdf, last, params.norm, cfg.rmsNormEps, normOptions(cfg));
    be.matmul(buf.logits, buf.lnf, decoder.lmHead, { transB: true });
    if (cfg.finalSoftcap !== null) be.softcap(buf.logits, cfg.finalSoftcap);
    const logits = await be.downloadF32(buf.logits);
    cache.length = past + Q;
    decoder.tokens.push(...ids);
    decoder.doraNormsReady = true;
    return logits;
  } finally {
    for (const v of views.reverse()) be.free(v);
    for (const s of Object.values(lora)) for (const t of [s.xa, s.dora?.base, s.dora?.lora]) if (t !== undefined) be.free(t);
  }
}

interface StepViews {
  ln: Tensor;
  rstd: Tensor;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  att: Tensor;
  x2: Tensor;
  gate: Tensor;
  up: Tensor;
  h: Tensor;
  qkNorm: { q: Tensor; k: Tensor; rstdQ: Tensor; rstdK: Tensor } | null;
  sandwich: { o: Tensor; rstdO: Tensor; down: Tensor; rstdDown: Tensor } | null;
  positions: Tensor; // i32 (Q) absolute positions past..past+Q-1
  invFreq: Tensor; // f32 (D/2)
}

/**
 * HF computes RoPE for any position, but dynamic NTK scaling (recomputed past max_position_embeddings) tuna
 * implements only up to that length.
 */
function checkPositions(cfg: ModelConfig, total: number): void {
  if (cfg.ropeScaling.type === "dynamic" && total > cfg.maxPositionEmbeddings) {
    throw new TunaError(
      "UNSUPPORTED",
      `${total} tokens exceed max_position_embeddings ${cfg.maxPositionEmbeddings}, beyond which dynamic RoPE scaling changes the frequencies; tuna does not implement that yet. Use a shorter prompt or fewer new tokens.`,
    );
  }
}

/** The lm_head the logits use: the frozen matrix, or (with trained token rows) params.effectiveLmHead filled now. */
function outputEmbedding(be: Backend, params: CausalLmParams): Tensor {
  const rows = params.lmHeadRows;
  const effective = params.effectiveLmHead;
  if (rows === null || effective === null) return params.lmHead;
  be.copy(effective, params.lmHead);
  rows.indices.forEach((id, j) => {
    const dst = be.rows(effective, id, 1);
    const src = be.rows(rows.param, j, 1);
    be.copy(dst, src);
    be.free(dst);
    be.free(src);
  });
  return effective;
}

function buffersFor(decoder: Decoder, Q: number): StepBuffers {
  const current = decoder.buffers;
  if (current !== null && current.rows >= Q) return current;
  const be = decoder.model.backend;
  if (current !== null) freeBuffers(be, current);
  // A prefill sizes the buffers for its whole prompt; later single-token steps use their first row.
  const cfg = decoder.model.params.cfg;
  const rows = Math.max(Q, current?.rows ?? 0);
  const C = cfg.hiddenSize;
  const F = cfg.intermediateSize;
  const qDim = cfg.numHeads * cfg.headDim;
  const kvDim = cfg.numKvHeads * cfg.headDim;
  const a = (shape: number[], name: string): Tensor => be.alloc("f32", shape, `decode.${name}`);
  const buffers: StepBuffers = {
    rows,
    ids: be.alloc("i32", [rows], "decode.ids"),
    positions: be.alloc("i32", [rows], "decode.positions"),
    x: [a([rows, C], "x0"), a([rows, C], "x1")],
    ln: a([rows, C], "ln"),
    rstd: a([rows], "rstd"),
    q: a([rows, qDim], "q"),
    k: a([rows, kvDim], "k"),
    v: a([rows, kvDim], "v"),
    att: a([rows, qDim], "att"),
    x2: a([rows, C], "x2"),
    gate: a([rows, F], "gate"),
    up: a([rows, F], "up"),
    h: a([rows, F], "h"),
    lnf: a([1, C], "lnf"),
    rstdf: a([1], "rstdf"),
    logits: a([1, cfg.vocabSize], "logits"),
    ...familySlots(cfg, rows, a, a),
  };
  decoder.buffers = buffers;
  return buffers;
}

function freeBuffers(be: Backend, b: StepBuffers): void {
  for (const t of [b.ids, b.positions, ...b.x, b.ln, b.rstd, b.q, b.k, b.v, b.att, b.x2, b.gate, b.up, b.h, b.lnf, b.rstdf, b.logits]) be.free(t);
  if (b.qkNorm !== null) for (const t of Object.values(b.qkNorm)) be.free(t);
  if (b.sandwich !== null) for (const t of Object.values(b.sandwich)) be.free(t);
}

/**
 * LoRA slots for Q tokens, one per projection shared by the layers (used one after another), sized for
 * the largest rank (and DoRA's two (Q, out) terms). Allocated per call and freed after it: linearForward
 * takes views of them each time.
 */
function loraSlots(be: Backend, params: CausalLmParams, Q: number): Partial<Record<Projection, LoraSlots>> {
  const slots: Partial<Record<Projection, LoraSlots>> = {};
  for (const p of PROJECTIONS) {
    let rank = 0;
    let dora = 0;
    for (const layer of params.layers) {
      const lin = layer.proj[p];
      rank = Math.max(rank, lin.lora?.rank ?? 0);
      if (lin.lora?.dora != null) dora = Math.max(dora, lin.outFeatures);
    }
    if (rank === 0) continue;
    slots[p] = {
      xa: be.alloc("f32", [Q * rank], `decode.${p}.xa`),
      mask: null,
      xd: null,
      dropoutApplied: false,
      dora: dora === 0 ? null : { base: be.alloc("f32", [Q * dora], `decode.${p}.dora_base`), lora: be.alloc("f32", [Q * dora], `decode.${p}.dora_lora`) },
    };
  }
  return slots;
}
