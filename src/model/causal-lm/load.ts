// Builds CausalLmParams on a backend from a checkpoint, one tensor at a time: frozen base weights in the
// chosen storage dtype; trainable tensors (LoRA per src/lora's layout, or every weight) in one flat f32 buffer.
import type { Backend, Tensor } from "../../backend/types.ts";
import type { WeightInfo, WeightSource } from "../../io/safetensors/checkpoint.ts";
import { decodeToFloat32 } from "../../io/safetensors/convert.ts";
import { f16ToF32Array, f32ToBf16Array } from "../../util/half.ts";
import { TunaError } from "../../util/errors.ts";
import { uint16sOf } from "../../util/bytes.ts";
import { loraLayout, tokenRowsKey } from "../../lora/layout.ts";
import type { LoraSettings } from "../../lora/settings.ts";
import type { SavedEmbeddings } from "../../lora/adapter-files.ts";
import type { ModelConfig } from "../../hf/config.ts";
import { expectedWeights, linearModules, linearPrefix, projectionHasBias, type LinearModule, type Projection } from "../../hf/weights.ts";
import type { Linear, LayerParams, CausalLmParams, TokenRows } from "./params.ts";
import { createTrainableBuffers, trainableView } from "../trainable.ts";
import { loraModuleViews, loraSpecs } from "./lora-views.ts";
import type { Quant4bitTensors } from "../../backend/types.ts";
import { absmaxOf, readQuantized4bit, type Quantized4bit } from "../../quant/bnb-checkpoint.ts";
import { code4bit } from "../../quant/codes.ts";
import { DEFAULT_BLOCKSIZE_4BIT } from "../../quant/blockwise.ts";
import { expectQuantizableBytes } from "../../quant/quantize-model.ts";
import type { SafetensorsDtype } from "../../io/safetensors/dtypes.ts";
import { dequantizeNestedAbsmax, doubleQuantizeAbsmax } from "../../quant/double-quant.ts";
import { dequantizeInt8Rowwise, quantizeInt8Rowwise, readQuantized8bit } from "../../quant/int8.ts";
import { denseShare, prequantizedShares, quantizedShares, valuesShare, type FrozenShare, type ShardedLoad } from "./frozen-shares.ts";

export interface LoadOptions {
  /** "lora": base frozen, adapters trainable; "full": every weight trainable (f32). */
  mode: "lora" | "full";
  lora?: LoraSettings;
  /** Storage of frozen base weights: f32 (exact reference) or bf16 (half the memory). */
  baseDtype: "f32" | "bf16";
  /**
   * Whole embedding matrices that replace the checkpoint's (an adapter saved after resizing the
   * vocabulary, as PEFT does for added chat tokens); cfg.vocabSize must already be the new size.
   */
  embeddings?: SavedEmbeddings | null;
  /**
   * Quantize the decoder blocks' linear weights at load (QLoRA): 4-bit NF4/FP4 kept packed and
   * dequantized per GEMM, or LLM.int8 rowwise. A bitsandbytes pre-quantized checkpoint
   * (quantization_config in config.json) is read as stored, with or without this option.
   */
  quantize?: { kind: "4bit"; quantType: "nf4" | "fp4"; doubleQuant: boolean; blocksize?: number } | { kind: "8bit" } | null;
  /**
   * ZeRO-3 / FSDP FULL_SHARD: the layers' frozen projection tensors are read as this rank's shares only
   * (src/model/causal-lm/frozen-shares.ts) and handed to `shard.keep`; the params hold placeholders for them.
   */
  shard?: ShardedLoad;
}

/** The stored tensor's info, after checking its shape is the one the config implies. */
function infoOfShape(source: WeightSource, name: string, shape: readonly number[]): WeightInfo {
  const info = source.info(name);
  if (info.shape.join(",") !== shape.join(",")) {
    throw new TunaError("MODEL_INVALID", `${name}: shape [${info.shape.join(", ")}] does not match the config's [${shape.join(", ")}]`);
  }
  return info;
}

async function readF32(source: WeightSource, name: string, shape: readonly number[]): Promise<Float32Array> {
  const info = infoOfShape(source, name, shape);
  return decodeToFloat32(await source.readTensor(name), info.dtype);
}

/** A tensor stored as BF16, as its raw 16-bit patterns. */
async function readBf16(source: WeightSource, name: string, shape: readonly number[]): Promise<Uint16Array> {
  infoOfShape(source, name, shape);
  return uint16sOf(await source.readTensor(name));
}

export async function loadCausalLmParams(backend: Backend, cfg: ModelConfig, source: WeightSource, options: LoadOptions): Promise<CausalLmParams> {
  const baseSource = source;
  const full = options.mode === "full";
  // LoRA mode without settings is a frozen model (evaluation of the base).
  const layout = full || options.lora === undefined ? null : loraLayout(options.lora, cfg);
  const specs = full ? expectedWeights(cfg).map((w) => ({ name: w.name, shape: w.shape })) : layout === null ? [] : loraSpecs(layout);
  const trainable = createTrainableBuffers(backend, specs);
  if (layout !== null && trainable.total !== layout.trainableParams) throw new TunaError("INTERNAL", "trainable buffer does not follow the LoRA layout");
  const byModule = new Map(layout?.modules.map((m) => [m.name, m]));

  // Frozen tensors get their own allocation; trainable ones are views into the flat buffer.
  const replaced = new Map<string, Float32Array>();
  if (options.embeddings?.embedTokens != null) replaced.set("model.embed_tokens.weight", options.embeddings.embedTokens);
  if (options.embeddings?.lmHead != null) replaced.set("lm_head.weight", options.embeddings.lmHead);
  const place = async (name: string, shape: number[]): Promise<{ t: Tensor; d: Tensor | null }> => {
    if (!full && options.baseDtype === "bf16" && !replaced.has(name) && source.info(name).dtype === "BF16") {
      // Stored as bf16 and kept as bf16: the bytes go up as they are (no f32 round trip through the host).
      const t = backend.alloc("bf16", shape, name);
      backend.upload(t, await readBf16(source, name, shape));
      return { t, d: null };
    }
    const values = replaced.get(name) ?? (await readF32(source, name, shape));
    if (full) {
      const { param, grad } = trainableView(trainable, name);
      backend.upload(param, values);
      return { t: param, d: grad };
    }
    const t = backend.alloc(options.baseDtype, shape, name);
    backend.upload(t, options.baseDtype === "f32" ? values : f32ToBf16Array(values));
    return { t, d: null };
  };

  const quantizedWeight = async (name: string, shape: [number, number]): Promise<{ dense: Tensor | null; quant: Quant4bitTensors | null } | null> => {
    const stored = cfg.quantization;
    if (stored !== null && !stored.skipModules.some((m) => name.includes(m))) {
      if (stored.loadIn4bit) return { dense: null, quant: upload4bit(backend, await readQuantized4bit(source, name, stored, shape), name) };
      return { dense: await uploadDense(dequantizeInt8Rowwise(await readQuantized8bit(source, name, shape)), name, shape), quant: null };
    }
    const q = options.quantize;
    if (q == null) return null;
    const info = source.info(name);
    const bytes = await source.readTensor(name);
    if (q.kind === "4bit") return { dense: null, quant: await quantizeOnBackend(backend, bytes, info.dtype, shape, q, `${source.dir}: ${name}`, name) };
    // LLM.int8: the CPU backend computes with the int8-rounded weights held dense (no int8 GEMM here).
    const int8 = quantizeInt8Rowwise(bytes, info.dtype, shape[0], shape[1], `${source.dir}: ${name}`);
    return { dense: await uploadDense(dequantizeInt8Rowwise(int8), name, shape), quant: null };
  };
  const uploadDense = (values: Float32Array, name: string, shape: number[]): Promise<Tensor> => {
    const t = backend.alloc(options.baseDtype, shape, name);
    backend.upload(t, options.baseDtype === "f32" ? values : f32ToBf16Array(values));
    return Promise.resolve(t);
  };

  // Sharded: each frozen projection tensor becomes this rank's share (kept by shard.keep) and a placeholder.
  const shard = full ? undefined : options.shard;
  const shares: FrozenShare[] = [];
  const placeholders = new Map<string, Tensor>();
  const placeholder = (dtype: "f32" | "bf16" | "u8"): Tensor => {
    const t = placeholders.get(dtype) ?? backend.alloc(dtype, [1], `zero3.released.${dtype}`);
    placeholders.set(dtype, t);
    return t;
  };
  const shardedWeight = async (p: Projection, name: string, shape: [number, number], source: WeightSource = baseSource): Promise<{ dense: Tensor | null; quant: Quant4bitTensors | null }> => {
    if (shard === undefined) throw new TunaError("INTERNAL", "shardedWeight without a sharded load");
    const stored = cfg.quantization;
    const q = options.quantize;
    const dense = (values: Float32Array): { dense: Tensor; quant: null } => {
      shares.push(valuesShare(values, shape, `${p}.weight`, options.baseDtype, shard));
      return { dense: placeholder(options.baseDtype), quant: null };
    };
    const fourBit = (r: { shares: FrozenShare[]; quantType: "nf4" | "fp4"; blocksize: number }): { dense: null; quant: Quant4bitTensors } => {
      shares.push(...r.shares);
      return { dense: null, quant: { packed: placeholder("u8"), absmax: placeholder("f32"), code: codeTable(backend, r.quantType, name), blocksize: r.blocksize } };
    };
    if (stored !== null && !stored.skipModules.some((m) => name.includes(m))) {
      if (stored.loadIn4bit) return fourBit(await prequantizedShares(source, name, p, stored, shape, shard));
      return dense(dequantizeInt8Rowwise(await readQuantized8bit(source, name, shape)));
    }
    if (q?.kind === "4bit") {
      return fourBit(await quantizedShares(backend, source, infoOfShape(source, name, shape), p, { ...q, blocksize: q.blocksize ?? DEFAULT_BLOCKSIZE_4BIT }, shard));
    }
    if (q?.kind === "8bit") {
      const info = source.info(name);
      return dense(dequantizeInt8Rowwise(quantizeInt8Rowwise(await source.readTensor(name), info.dtype, shape[0], shape[1], `${source.dir}: ${name}`)));
    }
    shares.push(await denseShare(source, infoOfShape(source, name, shape), `${p}.weight`, options.baseDtype, shard));
    return { dense: placeholder(options.baseDtype), quant: null };
  };

  /**
   * Phi-3's fused qkv_proj / gate_up_proj as the projections the block computes: each part's frozen rows as its
   * own tensor (4-bit and 8-bit quantized per part: the blocks are the same as the whole's when the part's size
   * is a multiple of the block), trained weights as row views of the fused one, and LoRA as PEFT holds it on the
   * fused module: one A (and dropout mask) for all parts, B and DoRA's magnitude by rows.
   */
  const fusedLinears = async (l: number, m: LinearModule): Promise<[Projection, Linear][]> => {
    const module = linearPrefix(l, m);
    const name = `${module}.weight`;
    const what = `${source.dir}: ${name}`;
    if (source.has(`${module}.bias`)) throw new TunaError("UNSUPPORTED", `${what}: a bias on the fused ${m.name} is not supported.`);
    const stored = cfg.quantization;
    const prequantizedFused = stored !== null && !stored.skipModules.some((s) => name.includes(s));
    // Each part's frozen tensors (or trained row views): ZeRO-3 shares of the part read as a row range of the fused
    // weight; else the part's rows of a pre-quantized fused weight (whole 4-bit blocks of the flattened weight each),
    // or of the stored one, quantized at load as asked.
    let frozen: (i: number) => Promise<Pick<Linear, "weight" | "dweight" | "quant">>;
    if (shard !== undefined) {
      if (prequantizedFused) {
        throw new TunaError("UNSUPPORTED", `${what}: ZeRO-3 / FSDP sharding of a pre-quantized fused ${m.name} is not implemented yet; shard the bf16 model with --use_4bit_quantization instead.`);
      }
      frozen = async (i) => {
        const part = m.parts[i]!;
        const partName = `${module}.${part.projection}.weight`;
        const sharded = await shardedWeight(part.projection, partName, [part.rows, m.in], rowsOfTensor(source, name, partName, part.start, part.rows, m.in));
        return { weight: sharded.dense, dweight: null, quant: sharded.quant };
      };
    } else if (prequantizedFused) {
      if (!stored.loadIn4bit) throw new TunaError("UNSUPPORTED", `${what}: a pre-quantized 8-bit checkpoint with fused projections (${m.name}) is not supported yet; load the bf16 model with --use_8bit_quantization instead.`);
      const q = await readQuantized4bit(source, name, stored, [m.out, m.in]);
      const misaligned = m.parts.find((p) => (p.start * m.in) % q.blocksize !== 0 || (p.rows * m.in) % q.blocksize !== 0);
      if (misaligned !== undefined) {
        throw new TunaError("UNSUPPORTED", `${what}: the ${misaligned.projection} rows of ${m.name} do not start on a ${q.blocksize}-element 4-bit block; load the bf16 model with --use_4bit_quantization instead.`);
      }
      const absmaxValues = absmaxOf(q);
      frozen = (i) => {
        const part = m.parts[i]!;
        const first = part.start * m.in;
        const n = part.rows * m.in;
        const packed = backend.alloc("u8", [n / 2], `${module}.${part.projection}.packed`);
        backend.upload(packed, q.packed.subarray(first / 2, (first + n) / 2));
        const absmax = backend.alloc("f32", [n / q.blocksize], `${module}.${part.projection}.absmax`);
        backend.upload(absmax, absmaxValues.subarray(first / q.blocksize, (first + n) / q.blocksize));
        return Promise.resolve({ weight: null, dweight: null, quant: { packed, absmax, code: codeTable(backend, q.quantType, name), blocksize: q.blocksize } });
      };
    } else {
      const info = infoOfShape(source, name, [m.out, m.in]);
      const bytes = await source.readTensor(name);
      if (full) {
        const { param, grad } = trainableView(trainable, name);
        backend.upload(param, decodeToFloat32(bytes, info.dtype));
        frozen = (i) => {
          const part = m.parts[i]!;
          return Promise.resolve({ weight: backend.rows(param, part.start, part.rows), dweight: backend.rows(grad, part.start, part.rows), quant: null });
        };
      } else {
        const elementBytes = info.dtype === "F32" ? 4 : 2;
        frozen = async (i) => {
          const part = m.parts[i]!;
          const shape: [number, number] = [part.rows, m.in];
          const partName = `${module}.${part.projection}`;
          const slice = bytes.subarray(part.start * m.in * elementBytes, (part.start + part.rows) * m.in * elementBytes);
          const q = options.quantize;
          if (q?.kind === "4bit") return { weight: null, dweight: null, quant: await quantizeOnBackend(backend, slice, info.dtype, shape, q, `${what} rows ${part.start}..`, partName) };
          const values = q?.kind === "8bit" ? dequantizeInt8Rowwise(quantizeInt8Rowwise(slice, info.dtype, part.rows, m.in, what)) : decodeToFloat32(slice, info.dtype);
          return { weight: await uploadDense(values, partName, shape), dweight: null, quant: null };
        };
      }
    }
    const lm = byModule.get(module);
    const out: [Projection, Linear][] = [];
    for (const [i, part] of m.parts.entries()) {
      const lora = lm === undefined ? null : loraModuleViews(backend, trainable, lm, part, i === 0 ? null : m.parts[0]!.projection, options.lora?.dropout ?? 0, options.baseDtype);
      out.push([part.projection, { module: `${module}[${part.projection}]`, inFeatures: m.in, outFeatures: part.rows, ...(await frozen(i)), bias: null, dbias: null, lora }]);
    }
    return out;
  };

  const C = cfg.hiddenSize;
  const embed = await place("model.embed_tokens.weight", [cfg.vocabSize, C]);
  const layers: LayerParams[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const inputNorm = await place(`model.layers.${l}.input_layernorm.weight`, [C]);
    // The pre-MLP norm: Llama's post_attention_layernorm, Gemma 2/3's pre_feedforward_layernorm.
    const postNorm = await place(`model.layers.${l}.${cfg.sandwichNorms ? "pre_feedforward_layernorm" : "post_attention_layernorm"}.weight`, [C]);
    let sandwich: LayerParams["sandwich"] = null;
    if (cfg.sandwichNorms) {
      const attnOut = await place(`model.layers.${l}.post_attention_layernorm.weight`, [C]);
      const mlpOut = await place(`model.layers.${l}.post_feedforward_layernorm.weight`, [C]);
      sandwich = { attnOut: attnOut.t, mlpOut: mlpOut.t, dAttnOut: attnOut.d, dMlpOut: mlpOut.d };
    }
    let qkNorm: LayerParams["qkNorm"] = null;
    if (cfg.qkNorm) {
      const q = await place(`model.layers.${l}.self_attn.q_norm.weight`, [cfg.headDim]);
      const k = await place(`model.layers.${l}.self_attn.k_norm.weight`, [cfg.headDim]);
      qkNorm = { q: q.t, k: k.t, dq: q.d, dk: k.d };
    }
    const proj = {} as Record<Projection, Linear>;
    for (const linear of linearModules(cfg)) {
      if (linear.parts.length > 1) {
        for (const [p, lin] of await fusedLinears(l, linear)) proj[p] = lin;
        continue;
      }
      const p = linear.parts[0]!.projection;
      const module = linearPrefix(l, linear);
      const { out, in: inF } = linear;
      const hasBias = projectionHasBias(cfg, p);
      // The frozen (or, full fine-tuning, trained) weight and bias: this rank's shares when sharded.
      type Placed = { t: Tensor | null; d: Tensor | null };
      let weight: Placed;
      let quant: Quant4bitTensors | null = null;
      let bias: Placed | null = null;
      if (shard !== undefined) {
        const sharded = await shardedWeight(p, `${module}.weight`, [out, inF]);
        weight = { t: sharded.dense, d: null };
        quant = sharded.quant;
        if (hasBias) {
          shares.push(await denseShare(source, infoOfShape(source, `${module}.bias`, [out]), `${p}.bias`, options.baseDtype, shard));
          bias = { t: placeholder(options.baseDtype), d: null };
        }
      } else {
        const quantized = full ? null : await quantizedWeight(`${module}.weight`, [out, inF]);
        weight = quantized !== null ? { t: quantized.dense, d: null } : await place(`${module}.weight`, [out, inF]);
        quant = quantized?.quant ?? null;
        if (hasBias) bias = await place(`${module}.bias`, [out]);
      }
      const m = byModule.get(module);
      const lora = m === undefined ? null : loraModuleViews(backend, trainable, m, { projection: p, start: 0, rows: out }, null, options.lora?.dropout ?? 0, options.baseDtype);
      proj[p] = { module, inFeatures: inF, outFeatures: out, weight: weight.t, quant, bias: bias?.t ?? null, dweight: weight.d, dbias: bias?.d ?? null, lora };
    }
    layers.push({ inputNorm: inputNorm.t, postNorm: postNorm.t, dInputNorm: inputNorm.d, dPostNorm: postNorm.d, qkNorm, sandwich, proj });
    if (shard !== undefined) shard.keep(l, shares.splice(0));
  }
  const norm = await place("model.norm.weight", [C]);
  const lmHead = cfg.tieWordEmbeddings ? embed : await place("lm_head.weight", [cfg.vocabSize, C]);

  const rows = (module: "embed_tokens" | "lm_head"): TokenRows | null => {
    const t = layout?.tokens.find((x) => x.module === module);
    if (t === undefined) return null;
    const { param, grad } = trainableView(trainable, tokenRowsKey(module));
    return { indices: t.indices, rowOf: new Map(t.indices.map((id, i) => [id, i])), param, grad };
  };
  const embedRows = rows("embed_tokens");
  // A tied lm_head shares the input embedding's rows (PEFT saves nothing for the tied copy).
  const lmHeadRows = cfg.tieWordEmbeddings ? embedRows : rows("lm_head");
  return {
    cfg,
    embed: embed.t,
    dEmbed: embed.d,
    layers,
    norm: norm.t,
    dNorm: norm.d,
    lmHead: lmHead.t,
    dLmHead: lmHead.d,
    embedRows,
    lmHeadRows,
    // The lm_head with trained rows substituted, stored like the frozen matrix (a bf16 model rounds them as HF does).
    effectiveLmHead: lmHeadRows === null ? null : backend.alloc(lmHead.t.dtype, [cfg.vocabSize, C], "lm_head.effective"),
    lmHeadGradScratch: lmHeadRows === null ? null : backend.alloc("f32", [cfg.vocabSize, C], "lm_head.grad_scratch"),
    trainable,
  };
}

/**
 * bnb quantize_4bit of one weight on the backend (the GPU quantizes a 7B model in seconds; the host took
 * about a minute): the weight goes up as stored (bf16/f32; f16 widened), is quantized there, and only the
 * per-block absmax comes back when double quantization rounds it through the 8-bit dynamic map.
 */
async function quantizeOnBackend(
  backend: Backend,
  bytes: Uint8Array,
  dtype: SafetensorsDtype,
  shape: [number, number],
  q: { quantType: "nf4" | "fp4"; doubleQuant: boolean; blocksize?: number },
  where: string,
  name: string,
): Promise<Quant4bitTensors> {
  const { n } = expectQuantizableBytes(bytes, dtype, shape, where);
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  const x = backend.alloc(dtype === "BF16" ? "bf16" : "f32", [n], `${name} (to quantize)`);
  if (dtype === "F32") backend.upload(x, new Float32Array(aligned.buffer, aligned.byteOffset, n));
  else if (dtype === "BF16") backend.upload(x, new Uint16Array(aligned.buffer, aligned.byteOffset, n));
  else backend.upload(x, f16ToF32Array(new Uint16Array(aligned.buffer, aligned.byteOffset, n)));
  const blocksize = q.blocksize ?? DEFAULT_BLOCKSIZE_4BIT;
  const packed = backend.alloc("u8", [Math.ceil(n / 2)], `${name}.packed`);
  const absmax = backend.alloc("f32", [Math.ceil(n / blocksize)], `${name}.absmax`);
  backend.quantize4bit(packed, absmax, x, q.quantType, blocksize);
  backend.free(x);
  if (q.doubleQuant) {
    const values = (await backend.download(absmax)) as Float32Array;
    backend.upload(absmax, dequantizeNestedAbsmax(doubleQuantizeAbsmax(values)));
  }
  return { packed, absmax, code: codeTable(backend, q.quantType, name), blocksize };
}

/** The 16-value NF4 or FP4 code table of a 4-bit weight, on the backend. */
function codeTable(backend: Backend, quantType: "nf4" | "fp4", name: string): Tensor {
  const code = backend.alloc("f32", [16], `${name}.code`);
  backend.upload(code, code4bit(quantType));
  return code;
}

/** Packed codes (u8), absmax dequantized to f32 per block, and the code table, on the backend. */
function upload4bit(backend: Backend, q: Quantized4bit, name: string): Quant4bitTensors {
  const packed = backend.alloc("u8", [q.packed.length], `${name}.packed`);
  backend.upload(packed, q.packed);
  const absmaxValues = absmaxOf(q);
  const absmax = backend.alloc("f32", [absmaxValues.length], `${name}.absmax`);
  backend.upload(absmax, absmaxValues);
  return { packed, absmax, code: codeTable(backend, q.quantType, name), blocksize: q.blocksize };
}

/**
 * Rows [start, start + rows) of the (?, cols) tensor `name` as a tensor `partName` of its own: what the sharded
 * load of a part of a fused weight reads (its ranges are ranges of the fused tensor's elements).
 */
function rowsOfTensor(source: WeightSource, name: string, partName: string, start: number, rows: number, cols: number): WeightSource {
  const info = source.info(name);
  const elementBytes = info.byteLength / info.shape.reduce((a, b) => a * b, 1);
  const first = start * cols;
  const partInfo = { ...info, name: partName, shape: [rows, cols], byteOffset: info.byteOffset + first * elementBytes, byteLength: rows * cols * elementBytes };
  const own = (n: string): boolean => n === partName;
  return {
    dir: source.dir,
    files: source.files,
    names: () => [...source.names(), partName].sort(),
    has: (n) => own(n) || source.has(n),
    info: (n) => (own(n) ? partInfo : source.info(n)),
    readTensor: (n, o) => (own(n) ? source.readTensorRange(name, first, first + rows * cols, o) : source.readTensor(n, o)),
    readTensorRange: (n, a, b, o) => (own(n) ? source.readTensorRange(name, first + a, first + b, o) : source.readTensorRange(n, a, b, o)),
    close: () => source.close(),
  };
}
