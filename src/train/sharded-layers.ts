// ZeRO-3 / FSDP FULL_SHARD for the frozen base of LoRA and QLoRA: each rank keeps 1/N of every layer's frozen
// tensors (dense weights, 4-bit codes and absmax, biases) as raw bytes, never converted on the way. When the model
// acquires a layer (forward, recompute, backward) the ranks all-gather its bytes into one reused set of full
// tensors; release points the layer at empty placeholders again, so a use outside acquire/release fails loudly.
// Norm weights (C values a layer) stay whole on every rank. First version: the shards live in host memory and
// the gather is not prefetched; every rank must acquire the same layers in the same order (the trainer keeps
// the ranks in step with empty micro-batches).
import { DTYPE_BYTES, type Backend, type DType, type Tensor } from "../backend/types.ts";
import type { Collective } from "../dist/collective.ts";
import { PROJECTIONS } from "../hf/weights.ts";
import type { LayerResidency } from "../model/types.ts";
import type { LayerParams } from "../model/llama/params.ts";
import { TunaError } from "../util/errors.ts";
import { bytesOf } from "../util/bytes.ts";

interface Slot {
  name: string;
  dtype: DType;
  shape: readonly number[];
  get(layer: LayerParams): Tensor;
  set(layer: LayerParams, t: Tensor): void;
}

/** The frozen tensors of a layer that are sharded, in one fixed order (the same on every rank). */
function frozenSlots(layer: LayerParams): Slot[] {
  const slots: Slot[] = [];
  for (const p of PROJECTIONS) {
    const lin = layer.proj[p];
    if (lin.weight !== null && lin.dweight === null) {
      const w = lin.weight;
      slots.push({ name: `${p}.weight`, dtype: w.dtype, shape: w.shape, get: (l) => l.proj[p].weight!, set: (l, t) => (l.proj[p].weight = t) });
    }
    const q = lin.quant;
    if (q !== null) {
      slots.push({ name: `${p}.packed`, dtype: q.packed.dtype, shape: q.packed.shape, get: (l) => l.proj[p].quant!.packed, set: (l, t) => (l.proj[p].quant = { ...l.proj[p].quant!, packed: t }) });
      slots.push({ name: `${p}.absmax`, dtype: q.absmax.dtype, shape: q.absmax.shape, get: (l) => l.proj[p].quant!.absmax, set: (l, t) => (l.proj[p].quant = { ...l.proj[p].quant!, absmax: t }) });
    }
    if (lin.bias !== null && lin.dbias === null) {
      slots.push({ name: `${p}.bias`, dtype: lin.bias.dtype, shape: lin.bias.shape, get: (l) => l.proj[p].bias!, set: (l, t) => (l.proj[p].bias = t) });
    }
  }
  return slots;
}

/** `bytes` as the typed array a tensor of `dtype` uploads from (copied, so it is aligned). */
function typedFrom(bytes: Uint8Array, dtype: DType): Float32Array | Int32Array | Uint8Array | Uint16Array {
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  switch (dtype) {
    case "f32":
      return new Float32Array(copy.buffer);
    case "i32":
      return new Int32Array(copy.buffer);
    case "u8":
      return copy;
    case "bf16":
    case "f16":
      return new Uint16Array(copy.buffer);
  }
}

export interface ShardedLayers extends LayerResidency {
  /** Bytes of frozen layer tensors this rank keeps, and what a whole copy would take. */
  readonly bytesHeld: number;
  readonly bytesWhole: number;
}

/**
 * Shards layers as they are loaded (loadLlamaParams' afterLayer), so a rank never holds more than one whole
 * layer of the base beside its shares; `residency` then makes the layers usable again, gathered over the ranks.
 */
export interface LayerSharder {
  shardLayer(layer: LayerParams): Promise<void>;
  residency(layers: readonly LayerParams[], collective: Collective): ShardedLayers;
}

export function createLayerSharder(be: Backend, rank: number, world: number): LayerSharder {
  let slots: Slot[] | undefined;
  let shardBytes: number[] = [];
  let placeholders: Tensor[] = [];
  const shards: Uint8Array[][] = [];
  let bytesHeld = 0;
  let bytesWhole = 0;
  return {
    async shardLayer(layer) {
      if (slots === undefined) {
        // Every layer has the same frozen tensors; each one's bytes are padded to a multiple of 4 x world, so
        // every rank's share is a whole number of float32 (what the collectives carry).
        const s = frozenSlots(layer);
        slots = s;
        shardBytes = s.map((slot) => Math.ceil((slot.get(layer).size * DTYPE_BYTES[slot.dtype]) / (4 * world)) * 4);
        placeholders = s.map((slot) => be.alloc(slot.dtype, [1], `zero3.released.${slot.name}`));
      }
      const own: Uint8Array[] = [];
      for (const [j, slot] of slots.entries()) {
        const t = slot.get(layer);
        const whole = bytesOf(await be.download(t));
        const share = new Uint8Array(shardBytes[j]!);
        share.set(whole.subarray(Math.min(whole.length, rank * share.length), Math.min(whole.length, (rank + 1) * share.length)));
        own.push(share);
        bytesHeld += share.length;
        bytesWhole += whole.length;
        slot.set(layer, placeholders[j]!);
        be.free(t);
      }
      shards.push(own);
    },
    residency(layers, collective) {
      const s = slots;
      if (s === undefined || shards.length !== layers.length) throw new TunaError("INTERNAL", `${shards.length} of ${layers.length} layers were sharded`);
      // One reused set of whole tensors for the layer being computed.
      const gathered = s.map((slot) => be.alloc(slot.dtype, slot.shape, `zero3.${slot.name}`));
      let current: number | undefined;
      return {
        bytesHeld,
        bytesWhole,
        async acquire(l) {
          if (current !== undefined) throw new TunaError("INTERNAL", `layer ${l} acquired while layer ${current} still is`);
          current = l;
          const layer = layers[l]!;
          for (const [j, slot] of s.entries()) {
            const mine = shards[l]![j]!;
            const all = await collective.allGather(new Float32Array(mine.buffer, mine.byteOffset, mine.byteLength / 4));
            be.upload(gathered[j]!, typedFrom(bytesOf(all).subarray(0, gathered[j]!.size * DTYPE_BYTES[slot.dtype]), slot.dtype));
            slot.set(layer, gathered[j]!);
          }
        },
        release(l) {
          if (current !== l) throw new TunaError("INTERNAL", `layer ${l} released but layer ${String(current)} is the one acquired`);
          const layer = layers[l]!;
          for (const [j, slot] of s.entries()) slot.set(layer, placeholders[j]!);
          current = undefined;
        },
      };
    },
  };
}
