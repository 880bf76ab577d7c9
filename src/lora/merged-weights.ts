// The weights of a base model with a PEFT adapter merged in, one tensor at a time as float32: W + scale * B @ A
// per adapted linear (DoRA rows rescaled), saved embeddings and token rows in place, a bnb base dequantized.
// What `tuna merge` writes as safetensors and `tuna export` as GGUF.
import { TunaError } from "../util/errors.ts";
import { decodeToFloat32 } from "../io/safetensors/convert.ts";
import type { LoraAdapter } from "./adapter-files.ts";
import type { LoraModuleLayout } from "./layout.ts";
import { dequantizeQuantized4bit, readQuantized4bit } from "../quant/bnb-checkpoint.ts";
import { dequantizeInt8Rowwise, readQuantized8bit } from "../quant/int8.ts";
import type { ModelFolder } from "../hf/folder.ts";
import type { ModelConfig } from "../hf/config.ts";
import { expectedWeights, type ExpectedWeight } from "../hf/weights.ts";

/** PEFT's merge of one Linear: W (out, in) += scaling * B (out, R) @ A (R, in); each row of B @ A is summed in float64, W rounded once. */
export function addLoraDelta(w: Float32Array, a: Float32Array, b: Float32Array, shape: { out: number; in: number; r: number }, scaling: number): void {
  const { out, in: inF, r: R } = shape;
  if (w.length !== out * inF || a.length !== R * inF || b.length !== out * R) {
    throw new TunaError("INTERNAL", `addLoraDelta: W ${w.length}, A ${a.length}, B ${b.length} values do not fit out ${out}, in ${inF}, R ${R}`);
  }
  const row = new Float64Array(inF); // (in)
  for (let o = 0; o < out; o++) {
    row.fill(0);
    for (let k = 0; k < R; k++) {
      const s = b[o * R + k]!;
      if (s === 0) continue;
      const aOff = k * inF;
      for (let i = 0; i < inF; i++) row[i]! += s * a[aOff + i]!;
    }
    const wOff = o * inF;
    for (let i = 0; i < inF; i++) w[wOff + i] = w[wOff + i]! + scaling * row[i]!;
  }
}

/**
 * PEFT's DoRA merge, after addLoraDelta made W + scaling * B A: each row is multiplied by magnitude / its L2
 * norm (norm summed in float64, the factor rounded to float32 as PEFT's f32 division is, the row rounded once).
 */
export function applyDoraMagnitude(w: Float32Array, magnitude: Float32Array, shape: { out: number; in: number }): void {
  const { out, in: inF } = shape;
  if (w.length !== out * inF || magnitude.length !== out) {
    throw new TunaError("INTERNAL", `applyDoraMagnitude: W ${w.length} and magnitude ${magnitude.length} values do not fit out ${out}, in ${inF}`);
  }
  for (let o = 0; o < out; o++) {
    const row = w.subarray(o * inF, (o + 1) * inF);
    let sum = 0;
    for (const v of row) sum += v * v;
    const factor = Math.fround(magnitude[o]! / Math.fround(Math.sqrt(sum)));
    for (let i = 0; i < inF; i++) row[i] = row[i]! * factor;
  }
}

/** What replaces each weight: embeddings saved with the adapter, LoRA modules, token rows. */
export interface MergePlan {
  cfg: ModelConfig; // the merged model's (vocabulary of the adapter)
  weights: ExpectedWeight[];
  replaced: Map<string, Float32Array>;
  lora: Map<string, { module: LoraModuleLayout; a: Float32Array; b: Float32Array; magnitude: Float32Array | null }>;
  tokenRows: Map<string, { indices: number[]; rows: Float32Array }>;
}

/** The plan of the base alone (no adapter) or with `adapter` (read from `adapterDir`) merged in. */
export function planMerge(folder: ModelFolder, adapter: LoraAdapter | null, adapterDir = ""): MergePlan {
  const base = folder.config;
  if (adapter === null) return { cfg: base, weights: expectedWeights(base), replaced: new Map(), lora: new Map(), tokenRows: new Map() };
  const saved = adapter.embeddings;
  const cfg = saved === null ? base : { ...base, vocabSize: saved.vocabSize };
  const replaced = new Map<string, Float32Array>();
  if (saved !== null) {
    const matrices: [string, Float32Array | null, string][] = [["model.embed_tokens.weight", saved.embedTokens, "embed_tokens"]];
    if (!base.tieWordEmbeddings) matrices.push(["lm_head.weight", saved.lmHead, "lm_head"]);
    for (const [name, values, module] of matrices) {
      if (values !== null) replaced.set(name, values);
      else if (saved.vocabSize !== base.vocabSize) {
        throw new TunaError(
          "MODEL_INVALID",
          `${adapterDir} saves embeddings for a vocabulary of ${saved.vocabSize} but not ${module}, whose base matrix has ${base.vocabSize} rows; ` +
            `save the adapter with both embed_tokens and lm_head (PEFT's save_embedding_layers).`,
        );
      }
    }
  }
  const lora = new Map<string, { module: LoraModuleLayout; a: Float32Array; b: Float32Array; magnitude: Float32Array | null }>();
  for (const m of adapter.params.layout.modules) {
    const t = adapter.params.byModule.get(m.name);
    if (t === undefined) throw new TunaError("INTERNAL", `the adapter has no tensors for ${m.name}`);
    lora.set(`${m.name}.weight`, { module: m, a: t.a, b: t.b, magnitude: t.magnitude });
  }
  const tokenRows = new Map<string, { indices: number[]; rows: Float32Array }>();
  for (const t of adapter.params.layout.tokens) {
    const rows = adapter.params.tokenRows.get(t.module);
    if (rows === undefined) throw new TunaError("INTERNAL", `the adapter has no token rows for ${t.module}`);
    const outside = t.indices.find((id) => id >= cfg.vocabSize);
    if (outside !== undefined) {
      throw new TunaError("MODEL_INVALID", `${adapterDir}: trainable_token_indices has token ${outside}, outside the merged vocabulary of ${cfg.vocabSize}.`);
    }
    // A tied lm_head is the input embedding itself; readAdapter only allows lm_head rows when untied.
    tokenRows.set(t.module === "embed_tokens" ? "model.embed_tokens.weight" : "lm_head.weight", { indices: t.indices, rows });
  }
  return { cfg, weights: expectedWeights(cfg), replaced, lora, tokenRows };
}

function isStoredQuantized(cfg: ModelConfig, w: ExpectedWeight): boolean {
  const q = cfg.quantization;
  return q !== null && w.quantizable && !q.skipModules.some((m) => w.name.includes(m));
}

/** One weight of the merged model as float32: read (dequantized when stored in bnb form), then merged. */
export async function mergedWeight(folder: ModelFolder, plan: MergePlan, w: ExpectedWeight): Promise<Float32Array> {
  const source = folder.weights;
  const base = folder.config;
  let values = plan.replaced.get(w.name);
  if (values === undefined) {
    if (isStoredQuantized(base, w)) {
      const [out = 0, inF = 0] = w.shape;
      values =
        base.quantization?.loadIn4bit === true
          ? dequantizeQuantized4bit(await readQuantized4bit(source, w.name, base.quantization, w.shape))
          : dequantizeInt8Rowwise(await readQuantized8bit(source, w.name, [out, inF]));
    } else {
      const info = source.info(w.name);
      if (info.shape.join(",") !== w.shape.join(",")) {
        throw new TunaError("MODEL_INVALID", `${source.dir}: "${w.name}" has shape [${info.shape.join(", ")}] but config.json implies [${w.shape.join(", ")}].`);
      }
      values = decodeToFloat32(await source.readTensor(w.name), info.dtype);
    }
  } else {
    values = values.slice(); // the adapter's matrix stays as read; token rows write into the copy
  }
  const lora = plan.lora.get(w.name);
  if (lora !== undefined) {
    const m = lora.module;
    addLoraDelta(values, lora.a, lora.b, { out: m.outFeatures, in: m.inFeatures, r: m.r }, m.scaling);
    if (lora.magnitude !== null) applyDoraMagnitude(values, lora.magnitude, { out: m.outFeatures, in: m.inFeatures });
  }
  const rows = plan.tokenRows.get(w.name);
  if (rows !== undefined) {
    const C = plan.cfg.hiddenSize;
    rows.indices.forEach((id, j) => {
      values.set(rows.rows.subarray(j * C, (j + 1) * C), id * C);
    });
  }
  return values;
}

