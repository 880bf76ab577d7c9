// One decoding step for many sequences at once (continuous batching): each sequence brings its next token
// and its own KV cache (a Decoder), possibly over a different LoRA adapter of the same base. The base's GEMMs
// run once over all rows; each run of rows with an adapter adds that adapter's B A (Linear.loraRows); each
// row attends to its own cache at its own position. Row for row the result is what decodeForward computes
// for that sequence alone.
import type { Backend, Tensor } from "../../backend/types.ts";
import { TunaError } from "../../util/errors.ts";
import { PROJECTIONS, type Projection } from "../../hf/weights.ts";
import { familySlots, type LoraSlots } from "./activations.ts";
import { attentionOptions, blockForwardWith, normOptions } from "./block.ts";
import { reserveCache, type Decoder } from "./decode.ts";
import { embeddingScale, type CausalLm } from "./model.ts";
import type { LayerParams, Linear, LoraRowGroup } from "./params.ts";

export interface BatchEntry {
  decoder: Decoder;
  /** The sequence's next token, at position decoder.cache.length. */
  token: number;
}

/**
 * Whether `decoder` can join a batch over `base`'s weights: the same frozen weights, and an adapter whose
 * effect is B A alone (no DoRA row rescaling, no trained embedding rows). Others decode on their own.
 */
export function batchable(decoder: Decoder, base: CausalLm): boolean {
  const p = decoder.model.params;
  const q = base.params;
  if (p.embed !== q.embed || p.lmHead !== q.lmHead || p.embedRows !== null || p.lmHeadRows !== null) return false;
  return p.layers.every((layer, l) =>
    PROJECTIONS.every((name) => {
      const lin = layer.proj[name];
      const ref = q.layers[l]!.proj[name];
      return lin.weight === ref.weight && lin.quant === ref.quant && lin.bias === ref.bias && lin.lora?.dora == null;
    }),
  );
}

/** Each projection's adapters by row: consecutive rows with the same adapter form one group. */
function rowGroups(entries: readonly BatchEntry[], l: number, p: Projection): LoraRowGroup[] {
  const groups: LoraRowGroup[] = [];
  entries.forEach((e, row) => {
    const lora = e.decoder.model.params.layers[l]!.proj[p].lora;
    if (lora === null) return;
    const last = groups.at(-1);
    if (last !== undefined && last.lora === lora && last.first + last.count === row) last.count++;
    else groups.push({ first: row, count: 1, lora });
  });
  return groups;
}

/** Layer l of the base with every projection's adapters given by rows. */
function mixedLayer(base: LayerParams, entries: readonly BatchEntry[], l: number): LayerParams {
  const proj = {} as Record<Projection, Linear>;
  for (const p of PROJECTIONS) proj[p] = { ...base.proj[p], lora: null, loraRows: rowGroups(entries, l, p) };
  return { ...base, proj };
}

/**
 * Runs one token of every entry through `base` (whose frozen weights every entry's model shares: check with
 * `batchable`), appends each token's keys and values to its own cache, and returns each entry's f32 logits (V).
 * Rows with the same adapter should be adjacent (fewer, larger adapter GEMMs); any order is correct.
 */
export async function decodeBatch(base: CausalLm, entries: readonly BatchEntry[]): Promise<Float32Array[]> {
  const B = entries.length;
  if (B === 0) return [];
  const be: Backend = base.backend;
  const { params } = base;
  const cfg = params.cfg;
  for (const e of entries) {
    if (!batchable(e.decoder, base)) throw new TunaError("INTERNAL", "decodeBatch: a decoder that does not share the base's weights (or has DoRA / token rows) cannot join the batch");
    if (!Number.isInteger(e.token) || e.token < 0 || e.token >= cfg.vocabSize) throw new TunaError("CONFIG_INVALID", `token id ${e.token} is outside the model's vocabulary (${cfg.vocabSize})`);
    if (e.decoder.cache.length === 0) throw new TunaError("INTERNAL", "decodeBatch continues sequences; prefill each prompt with decodeForward first");
    reserveCache(e.decoder, e.decoder.cache.length + 1);
  }
  const C = cfg.hiddenSize;
  const F = cfg.intermediateSize;
  const qDim = cfg.numHeads * cfg.headDim;
  const kvDim = cfg.numKvHeads * cfg.headDim;
  const owned: Tensor[] = [];
  const views: Tensor[] = [];
  const a = (shape: number[], name: string, dtype: "f32" | "i32" = "f32"): Tensor => {
    const t = be.alloc(dtype, shape, `decode_batch.${name}`);
    owned.push(t);
    return t;
  };
  const view = (t: Tensor): Tensor => {
    views.push(t);
    return t;
  };
  try {
    const ids = a([B], "ids", "i32");
    be.upload(ids, Int32Array.from(entries, (e) => e.token));
    const positions = a([B], "positions", "i32");
    be.upload(positions, Int32Array.from(entries, (e) => e.decoder.cache.length));
    const xs = [a([B, C], "x0"), a([B, C], "x1")] as const;
    let maxRank = 0;
    for (const e of entries) for (const layer of e.decoder.model.params.layers) for (const p of PROJECTIONS) maxRank = Math.max(maxRank, layer.proj[p].lora?.rank ?? 0);
    const loraSlot: LoraSlots | undefined = maxRank === 0 ? undefined : { xa: a([B * maxRank], "xa"), mask: null, xd: null, dropoutApplied: false, dora: null };
    const step = {
      ln1: a([B, C], "ln"),
      rstd1: a([B], "rstd"),
      q: a([B, qDim], "q"),
      k: a([B, kvDim], "k"),
      v: a([B, kvDim], "v"),
      att: a([B, qDim], "att"),
      x2: a([B, C], "x2"),
      gate: a([B, F], "gate"),
      up: a([B, F], "up"),
      h: a([B, F], "h"),
      ...familySlots(cfg, B, a, a),
      lora: loraSlot === undefined ? {} : Object.fromEntries(PROJECTIONS.map((p) => [p, loraSlot])),
    };
    const slots = { ...step, ln2: step.ln1, rstd2: step.rstd1 };
    be.embeddingForward(xs[0], ids, params.embed);
    const embedScale = embeddingScale(base);
    if (embedScale !== 1) be.scale(xs[0], embedScale);
    const scratch = { dequant: base.dequantScratch };
    for (let l = 0; l < cfg.numLayers; l++) {
      const layer = mixedLayer(params.layers[l]!, entries, l);
      const options = attentionOptions(cfg, l);
      blockForwardWith(be, cfg, layer, slots, xs[l % 2]!, xs[(l + 1) % 2]!, { positions, invFreq: base.layerInvFreq[l]! }, (att, q, k, v) => {
        entries.forEach((e, row) => {
          const cache = e.decoder.cache;
          const past = cache.length;
          be.copy(view(be.rows(cache.keys[l]!, past, 1)), view(be.rows(k, row, 1)));
          be.copy(view(be.rows(cache.values[l]!, past, 1)), view(be.rows(v, row, 1)));
          be.attentionDecode(view(be.rows(att, row, 1)), view(be.rows(q, row, 1)), cache.keys[l]!, cache.values[l]!, past, cfg.attentionScale, options);
        });
      }, scratch, null);
      for (const t of views.splice(0)) be.free(t);
    }
    const lnf = a([B, C], "lnf");
    be.rmsnormForward(lnf, a([B], "rstdf"), xs[cfg.numLayers % 2]!, params.norm, cfg.rmsNormEps, normOptions(cfg));
    const logits = a([B, cfg.vocabSize], "logits");
    be.matmul(logits, lnf, params.lmHead, { transB: true });
    if (cfg.finalSoftcap !== null) be.softcap(logits, cfg.finalSoftcap);
    const all = await be.downloadF32(logits);
    const V = cfg.vocabSize;
    return entries.map((e, row) => {
      e.decoder.cache.length++;
      e.decoder.tokens.push(e.token);
      return all.slice(row * V, (row + 1) * V);
    });
  } finally {
    for (const t of views.reverse()) be.free(t);
    for (const t of owned.reverse()) be.free(t);
  }
}
