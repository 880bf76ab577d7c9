// Random model weights as an in-memory WeightSource, made tensor by tensor when read: bf16 normals
// (std 0.02) sliced from a pre-generated pool, or a pre-quantized bitsandbytes NF4 + double-quant key set.
import type { WeightInfo, WeightSource } from "../../../src/io/safetensors/checkpoint.ts";
import type { SafetensorsDtype } from "../../../src/io/safetensors/dtypes.ts";
import type { ModelConfig } from "../../../src/hf/config.ts";
import { expectedWeights } from "../../../src/hf/weights.ts";
import { dynamicMap, quantMap4bit } from "../../../src/quant/codes.ts";
import { NESTED_BLOCKSIZE } from "../../../src/quant/double-quant.ts";
import { packQuantState, packedStorageShape, quantStateKey } from "../../../src/quant/quant-state.ts";
import { f32ToBf16Bits } from "../../../src/util/half.ts";
import { TunaError } from "../../../src/util/errors.ts";
import { createRng } from "../../../src/util/random.ts";

export const DEFAULT_POOL_BYTES = 64 * 2 ** 20;
/** Dense weights are N(0, 0.02^2), HF's initializer_range for Llama. */
export const WEIGHT_STD = 0.02;
/** bnb's default 4-bit blocksize. */
export const BLOCKSIZE_4BIT = 64;
/**
 * Double-quant parameters of the synthetic 4-bit weights: absmax = dynamicMap[q] * nested + offset with
 * nested in [NESTED_ABSMAX_MIN, NESTED_ABSMAX_MIN + NESTED_ABSMAX_SPREAD) and |dynamicMap| <= 1, so every
 * block's absmax lies in (0.032, 0.068): about what N(0, 0.02^2) blocks of 64 give (mean max |x| ~ 0.05).
 */
export const NESTED_OFFSET = 0.05;
export const NESTED_ABSMAX_MIN = 0.012;
export const NESTED_ABSMAX_SPREAD = 0.006;

/** Random bytes made once and sliced at varying offsets: generating 7B values one by one in JS is too slow. */
export interface SyntheticPools {
  /** bf16 bit patterns of N(0, WEIGHT_STD^2) values, as bytes (even length). */
  bf16: Uint8Array;
  /** Uniform random bytes (packed NF4 codes, 8-bit absmax codes). */
  bytes: Uint8Array;
}

export function createSyntheticPools(poolBytes: number = DEFAULT_POOL_BYTES, seed = 0): SyntheticPools {
  if (!Number.isSafeInteger(poolBytes) || poolBytes < 1024 || poolBytes % 4 !== 0) {
    throw new TunaError("CONFIG_INVALID", `the random pool must be a multiple of 4 bytes and at least 1024, got ${poolBytes}`);
  }
  const rng = createRng(seed);
  const halves = new Uint16Array(poolBytes / 2);
  for (let i = 0; i < halves.length; i++) halves[i] = f32ToBf16Bits(rng.normal() * WEIGHT_STD);
  const words = new Uint32Array(poolBytes / 4);
  for (let i = 0; i < words.length; i++) words[i] = Math.floor(rng.uniform() * 4294967296);
  return { bf16: new Uint8Array(halves.buffer), bytes: new Uint8Array(words.buffer) };
}

/** FNV-1a of a name: where in a pool the tensor's bytes start. */
function hashName(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * Fills `out` from the pool starting at an `align`-aligned offset chosen by the name, wrapping around;
 * `skip` bytes further on for a range of the tensor that starts there.
 */
function fillFromPool(out: Uint8Array, pool: Uint8Array, name: string, align: number, skip = 0): void {
  let at = ((hashName(name) % Math.floor(pool.length / align)) * align + skip) % pool.length;
  for (let done = 0; done < out.length; ) {
    const n = Math.min(out.length - done, pool.length - at);
    out.set(pool.subarray(at, at + n), done);
    done += n;
    at = 0;
  }
}

function bytesOfF32(values: Float32Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

interface Entry {
  dtype: SafetensorsDtype;
  shape: number[];
  byteLength: number;
  /** Fills `out` with the tensor's bytes from byte `skip` on (skip > 0 only where the entry says `ranged`). */
  fill(out: Uint8Array, skip?: number): void;
  ranged?: boolean;
}

const BYTES: Partial<Record<SafetensorsDtype, number>> = { BF16: 2, F32: 4, U8: 1 };

/** The tensors Linear4bit saves for one NF4 weight with double quant (src/quant/bnb-checkpoint.ts's key set). */
function nf4Entries(weightName: string, shape: [number, number], pools: SyntheticPools): [string, Omit<Entry, "byteLength">][] {
  const n = shape[0] * shape[1];
  const blocks = Math.ceil(n / BLOCKSIZE_4BIT);
  const nestedBlocks = Math.ceil(blocks / NESTED_BLOCKSIZE);
  const packed = packedStorageShape(n, "uint8");
  if (packed === undefined) throw new TunaError("INTERNAL", `${weightName}: ${n} values do not pack into whole bytes`);
  const constant = (values: Uint8Array) => (out: Uint8Array) => {
    out.set(values);
  };
  const nestedAbsmax = (out: Uint8Array): void => {
    const values = new Float32Array(out.buffer, out.byteOffset, nestedBlocks);
    const noise = new Uint8Array(nestedBlocks);
    fillFromPool(noise, pools.bytes, `${weightName}.nested_absmax`, 1);
    for (let i = 0; i < nestedBlocks; i++) values[i] = NESTED_ABSMAX_MIN + (NESTED_ABSMAX_SPREAD * noise[i]!) / 256;
  };
  const state = packQuantState({
    quantType: "nf4",
    blocksize: BLOCKSIZE_4BIT,
    dtype: "bfloat16",
    shape,
    nested: { blocksize: NESTED_BLOCKSIZE, dtype: "float32", offset: Math.fround(NESTED_OFFSET) },
  });
  return [
    [weightName, { dtype: packed.dtype, shape: packed.shape, ranged: true, fill: (out, skip) => { fillFromPool(out, pools.bytes, weightName, 1, skip); } }],
    [`${weightName}.absmax`, { dtype: "U8", shape: [blocks], fill: (out) => { fillFromPool(out, pools.bytes, `${weightName}.absmax`, 1); } }],
    [`${weightName}.quant_map`, { dtype: "F32", shape: [16], fill: constant(bytesOfF32(quantMap4bit("nf4"))) }],
    [`${weightName}.nested_absmax`, { dtype: "F32", shape: [nestedBlocks], fill: nestedAbsmax }],
    [`${weightName}.nested_quant_map`, { dtype: "F32", shape: [256], fill: constant(bytesOfF32(dynamicMap())) }],
    [`${weightName}.${quantStateKey("nf4")}`, { dtype: "U8", shape: [state.length], fill: constant(state) }],
  ];
}

/**
 * Weights for every tensor cfg implies. Norm weights are ones (HF's RMSNorm init); other dense tensors
 * bf16 normals. When cfg.quantization is a 4-bit config (NF4, double quant), the decoder Linear weights
 * are bnb 4-bit key sets instead. `label` names the source in messages (its `dir`).
 */
export function createSyntheticWeights(cfg: ModelConfig, pools: SyntheticPools, label: string): WeightSource {
  const q = cfg.quantization;
  if (q !== null && !(q.loadIn4bit && q.quantType === "nf4" && q.useDoubleQuant)) {
    throw new TunaError("UNSUPPORTED", `${label}: synthetic quantized weights are NF4 with double quant only`);
  }
  const entries = new Map<string, Entry>();
  const add = (name: string, e: Omit<Entry, "byteLength">): void => {
    const size = BYTES[e.dtype];
    if (size === undefined) throw new TunaError("INTERNAL", `${name}: no synthetic ${e.dtype} tensors`);
    entries.set(name, { ...e, byteLength: e.shape.reduce((a, b) => a * b, size) });
  };
  for (const w of expectedWeights(cfg)) {
    if (q !== null && w.quantizable && w.shape.length === 2) {
      for (const [name, e] of nf4Entries(w.name, [w.shape[0]!, w.shape[1]!], pools)) add(name, e);
    } else if (w.kind === "input_layernorm" || w.kind === "post_attention_layernorm" || w.kind === "norm") {
      add(w.name, { dtype: "BF16", shape: w.shape, fill: (out) => new Uint16Array(out.buffer, out.byteOffset, out.length / 2).fill(f32ToBf16Bits(1)) });
    } else {
      add(w.name, { dtype: "BF16", shape: w.shape, ranged: true, fill: (out, skip) => { fillFromPool(out, pools.bf16, w.name, 2, skip); } });
    }
  }
  const infos = new Map<string, WeightInfo>();
  let offset = 0;
  for (const [name, e] of entries) {
    infos.set(name, { name, dtype: e.dtype, shape: e.shape, byteOffset: offset, byteLength: e.byteLength, file: label });
    offset += e.byteLength;
  }
  const sorted = [...infos.keys()].sort();
  const info = (name: string): WeightInfo => {
    const found = infos.get(name);
    if (found === undefined) throw new TunaError("MODEL_INVALID", `${label} has no tensor named "${name}"`);
    return found;
  };
  return {
    dir: label,
    files: [],
    names: () => [...sorted],
    info,
    has: (name) => infos.has(name),
    readTensor: (name) => {
      const e = entries.get(name);
      if (e === undefined) return Promise.reject(new TunaError("MODEL_INVALID", `${label} has no tensor named "${name}"`));
      // A fresh (8-byte aligned) array per read, as the file-backed sources return.
      const out = new Uint8Array(e.byteLength);
      e.fill(out);
      return Promise.resolve(out);
    },
    readTensorRange: (name, first, end) => {
      const e = entries.get(name);
      if (e === undefined) return Promise.reject(new TunaError("MODEL_INVALID", `${label} has no tensor named "${name}"`));
      const size = e.byteLength / e.shape.reduce((a, b) => a * b, 1);
      if (e.ranged === true) {
        const out = new Uint8Array((end - first) * size);
        e.fill(out, first * size);
        return Promise.resolve(out);
      }
      const whole = new Uint8Array(e.byteLength);
      e.fill(whole);
      return Promise.resolve(whole.slice(first * size, end * size));
    },
    close: () => Promise.resolve(),
  };
}
