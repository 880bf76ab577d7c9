// Sharded loading of a layer's frozen projection tensors (ZeRO-3 / FSDP FULL_SHARD): each rank reads from the
// checkpoint only the elements of its own share, converts or quantizes just those, and keeps them as raw
// bytes. A tensor of n elements is cut into `world` equal runs of k elements (the last ones padded with zeros),
// k a multiple of the tensor's unit: 4 bytes (what the collectives carry), and for 4-bit codes a whole number of
// quantization blocks, so a rank's quantized blocks are exactly those a one-process load produces. Double
// quantization needs every block's absmax (its offset is their mean): the ranks all-gather their absmax shares
// (float32 bit patterns, no arithmetic in transit), and each rounds the whole vector exactly as one process does.
import { DTYPE_BYTES, type Backend, type DType, type Tensor } from "../../backend/types.ts";
import type { WeightInfo, WeightSource } from "../../io/safetensors/checkpoint.ts";
import { decodeToFloat32 } from "../../io/safetensors/convert.ts";
import { dequantizeNestedAbsmax, doubleQuantizeAbsmax } from "../../quant/double-quant.ts";
import { absmaxOf, readQuantized4bit } from "../../quant/bnb-checkpoint.ts";
import { weightDtypeName } from "../../quant/quant-state.ts";
import type { BnbQuantizationConfig } from "../../hf/config.ts";
import type { Projection } from "../../hf/weights.ts";
import { f16ToF32Array, f32ToBf16Array } from "../../util/half.ts";
import { TunaError } from "../../util/errors.ts";
import { bytesOf, uint16sOf } from "../../util/bytes.ts";
import { numel } from "../../util/shape.ts";
import type { LayerParams } from "./params.ts";

/** Which frozen tensor of a layer: a projection's dense weight, its 4-bit codes or absmax, or its bias. */
export type FrozenSlot = `${Projection}.${"weight" | "packed" | "absmax" | "bias"}`;

/** This rank's share of one frozen tensor. */
export interface FrozenShare {
  slot: FrozenSlot;
  /** How the whole tensor is stored on the backend, and its shape. */
  dtype: DType;
  shape: readonly number[];
  /** Elements every rank keeps (world x perRank >= the tensor's size; the tail is zero padding). */
  perRank: number;
  /** This rank's elements [rank * perRank, (rank + 1) * perRank) as raw bytes (perRank x the dtype's size). */
  bytes: Uint8Array;
}

/** What a sharded load needs: this rank's place, and an all-gather over the ranks (for double quantization). */
export interface ShardedLoad {
  rank: number;
  world: number;
  allGather(local: Float32Array): Promise<Float32Array>;
  /** Receives layer l's shares once the layer is read (its tensors are placeholders in the returned params). */
  keep(layer: number, shares: FrozenShare[]): void;
}

/** Points `slot` of the layer at `t` (the gathered whole tensor, or a placeholder while the layer is released). */
export function setFrozen(layer: LayerParams, slot: FrozenSlot, t: Tensor): void {
  const [p, part] = slot.split(".") as [Projection, "weight" | "packed" | "absmax" | "bias"];
  const lin = layer.proj[p];
  if (part === "weight") lin.weight = t;
  else if (part === "bias") lin.bias = t;
  else if (lin.quant === null) throw new TunaError("INTERNAL", `${lin.module} has no 4-bit weight to hold ${slot}`);
  else lin.quant = { ...lin.quant, [part]: t };
}

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/** Elements per rank: n over `world`, rounded up to whole units of `unit` elements. */
export function perRankElements(n: number, world: number, unit: number): number {
  return Math.ceil(n / (world * unit)) * unit;
}

/** The element unit that keeps a share a whole number of 4-byte words (and of 4-bit blocks). */
function unitOf(dtype: DType, blocksize?: number): number {
  const words = 4 / gcd(4, DTYPE_BYTES[dtype]);
  return blocksize === undefined ? words : (words * blocksize) / gcd(words, blocksize);
}

/** [first, end) of this rank's elements within a tensor of n, and the padding after them. */
function rangeOf(n: number, perRank: number, rank: number): [number, number] {
  return [Math.min(n, rank * perRank), Math.min(n, (rank + 1) * perRank)];
}

/** values (already in the storage dtype's array type) zero-padded to `length` elements, as bytes. */
function padded(values: Float32Array | Uint16Array | Uint8Array, length: number): Uint8Array {
  const out = new (values.constructor as Float32ArrayConstructor | Uint16ArrayConstructor | Uint8ArrayConstructor)(length);
  out.set(values.subarray(0, length));
  return bytesOf(out);
}

/** Stored elements (a float dtype) in the storage dtype: bf16 bits as they are when both are bf16. */
function toStorage(bytes: Uint8Array, stored: WeightInfo["dtype"], storage: "f32" | "bf16"): Float32Array | Uint16Array {
  if (storage === "bf16" && stored === "BF16") return uint16sOf(bytes);
  const values = decodeToFloat32(bytes, stored);
  return storage === "f32" ? values : f32ToBf16Array(values);
}

/** A dense frozen tensor (weight or bias) read as this rank's elements only. */
export async function denseShare(source: WeightSource, info: WeightInfo, slot: FrozenSlot, storage: "f32" | "bf16", load: ShardedLoad): Promise<FrozenShare> {
  const n = numel(info.shape);
  const perRank = perRankElements(n, load.world, unitOf(storage));
  const [first, end] = rangeOf(n, perRank, load.rank);
  const stored = await source.readTensorRange(info.name, first, end);
  return { slot, dtype: storage, shape: info.shape, perRank, bytes: padded(toStorage(stored, info.dtype, storage), perRank) };
}

/** A dense tensor whose whole values were computed already (an 8-bit weight dequantized): this rank's share. */
export function valuesShare(values: Float32Array, shape: readonly number[], slot: FrozenSlot, storage: "f32" | "bf16", load: ShardedLoad): FrozenShare {
  const perRank = perRankElements(values.length, load.world, unitOf(storage));
  const [first, end] = rangeOf(values.length, perRank, load.rank);
  const own = values.subarray(first, end);
  return { slot, dtype: storage, shape, perRank, bytes: padded(storage === "f32" ? own : f32ToBf16Array(own), perRank) };
}

/** A 4-bit weight's shares, and what its placeholder Quant4bitTensors needs. */
export interface FourBitShares {
  shares: FrozenShare[];
  quantType: "nf4" | "fp4";
  blocksize: number;
}

/** The codes and absmax shares of one 4-bit weight, given this rank's absmax values before any double quantization. */
async function fourBitShares(
  p: Projection,
  n: number,
  blocksize: number,
  perRank: number,
  packed: Uint8Array,
  absmax: Float32Array,
  doubleQuant: boolean,
  load: ShardedLoad,
): Promise<FrozenShare[]> {
  if (perRank % blocksize !== 0) throw new TunaError("INTERNAL", `a share of ${perRank} elements is not whole blocks of ${blocksize}`);
  const blocks = Math.ceil(n / blocksize);
  const ownBlocks = perRank / blocksize;
  let ownAbsmax = absmax;
  if (doubleQuant) {
    const all = (await load.allGather(absmax)).subarray(0, blocks);
    ownAbsmax = dequantizeNestedAbsmax(doubleQuantizeAbsmax(all)).subarray(load.rank * ownBlocks, (load.rank + 1) * ownBlocks);
  }
  return [
    { slot: `${p}.packed`, dtype: "u8", shape: [Math.ceil(n / 2)], perRank: perRank / 2, bytes: padded(packed, perRank / 2) },
    { slot: `${p}.absmax`, dtype: "f32", shape: [blocks], perRank: ownBlocks, bytes: padded(ownAbsmax, ownBlocks) },
  ];
}

/**
 * bnb quantize_4bit of this rank's elements of a weight, on the backend (as the whole-tensor load does): the
 * stored bf16/f32 (f16 widened) elements go up, their blocks are quantized, codes and absmax come back.
 */
export async function quantizedShares(
  be: Backend,
  source: WeightSource,
  info: WeightInfo,
  p: Projection,
  q: { quantType: "nf4" | "fp4"; doubleQuant: boolean; blocksize: number },
  load: ShardedLoad,
): Promise<FourBitShares> {
  if (weightDtypeName(info.dtype) === undefined) {
    throw new TunaError("MODEL_INVALID", `${source.dir}: ${info.name} is ${info.dtype}; bitsandbytes quantizes only F32, BF16 or F16 weights.`);
  }
  const n = numel(info.shape);
  const perRank = perRankElements(n, load.world, unitOf("u8", q.blocksize) * 2);
  const [first, end] = rangeOf(n, perRank, load.rank);
  const stored = await source.readTensorRange(info.name, first, end);
  // Up as stored (bf16 or f32; f16 widened to f32), zero-padded to whole blocks.
  const bf16 = info.dtype === "BF16";
  const x = be.alloc(bf16 ? "bf16" : "f32", [perRank], `${info.name} (share to quantize)`);
  const values = bf16 ? uint16sOf(stored) : info.dtype === "F32" ? decodeToFloat32(stored, "F32") : f16ToF32Array(uint16sOf(stored));
  const share = padded(values, perRank);
  be.upload(x, bf16 ? new Uint16Array(share.buffer) : new Float32Array(share.buffer));
  const packed = be.alloc("u8", [perRank / 2], `${info.name}.packed (share)`);
  const absmax = be.alloc("f32", [perRank / q.blocksize], `${info.name}.absmax (share)`);
  be.quantize4bit(packed, absmax, x, q.quantType, q.blocksize);
  const codes = (await be.download(packed)) as Uint8Array;
  const absmaxValues = await be.downloadF32(absmax);
  for (const t of [x, packed, absmax]) be.free(t);
  return { shares: await fourBitShares(p, n, q.blocksize, perRank, codes, absmaxValues, q.doubleQuant, load), quantType: q.quantType, blocksize: q.blocksize };
}

/**
 * A bitsandbytes pre-quantized weight, sharded without dequantizing: this rank's bytes of the packed codes, and
 * its blocks of the (small) absmax, which is read whole because double quantization stores it nested.
 */
export async function prequantizedShares(
  source: WeightSource,
  name: string,
  p: Projection,
  stored: BnbQuantizationConfig,
  shape: [number, number],
  load: ShardedLoad,
): Promise<FourBitShares> {
  const n = shape[0] * shape[1];
  // Shares of whole 4096-element runs hold whole blocks of every blocksize bitsandbytes writes (32 ... 4096).
  const perRank = perRankElements(n, load.world, MAX_BNB_BLOCKSIZE);
  const q = await readQuantized4bit(source, name, stored, shape, { packedBytes: [(load.rank * perRank) / 2, ((load.rank + 1) * perRank) / 2] });
  if (perRank % q.blocksize !== 0) {
    throw new TunaError("MODEL_INVALID", `${source.dir}: ${name} has blocksize ${q.blocksize}, which does not divide ${MAX_BNB_BLOCKSIZE}; it cannot be sharded. Load it without ZeRO-3 / FULL_SHARD.`);
  }
  const ownBlocks = perRank / q.blocksize;
  const absmax = absmaxOf(q).subarray(load.rank * ownBlocks, (load.rank + 1) * ownBlocks);
  return { shares: await fourBitShares(p, n, q.blocksize, perRank, q.packed, absmax, false, load), quantType: q.quantType, blocksize: q.blocksize };
}

const MAX_BNB_BLOCKSIZE = 4096;
