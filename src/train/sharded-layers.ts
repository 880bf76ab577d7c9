// ZeRO-3 / FSDP FULL_SHARD for the frozen base of LoRA and QLoRA: each rank keeps 1/N of every layer's frozen
// projection tensors (dense weights, 4-bit codes and absmax, biases) as raw bytes, read that way at load
// (src/model/causal-lm/frozen-shares.ts) and never converted on the way. When the model acquires a layer (forward,
// recompute, backward) the ranks all-gather its bytes, one collective a layer, into one of two reused sets of
// whole tensors; the layer the model will use next is gathered into the other set while this one computes
// (prefetch). Release points the layer at placeholders again, so a use outside acquire/release fails loudly.
// Norm weights (C values a layer) stay whole on every rank. Every rank must acquire the same layers in the same
// order (the trainer keeps the ranks in step with empty micro-batches), which also fixes the collectives' order.
// The shares live in host memory and the gather goes through it (the host transport's way; on GPUs that is
// parameter offload): shares on the device gathered by NCCL on its stream are the next step.
import { DTYPE_BYTES, type Backend, type Tensor } from "../backend/types.ts";
import type { GatherGroup } from "../dist/gather-group.ts";
import type { LayerResidency } from "../model/types.ts";
import type { LayerParams } from "../model/causal-lm/params.ts";
import { setFrozen, type FrozenShare, type ShardedLoad } from "../model/causal-lm/frozen-shares.ts";
import { TunaError } from "../util/errors.ts";

export interface ShardedLayers extends LayerResidency {
  /** Bytes of frozen layer tensors this rank keeps, and what a whole copy would take. */
  readonly bytesHeld: number;
  readonly bytesWhole: number;
}

/** One layer's shares laid end to end (each a whole number of 4-byte words), what one all-gather carries. */
interface LayerShares {
  bytes: Uint8Array;
}

/** Where each tensor's share sits in a layer's flat share, the same for every layer. */
interface SlotLayout {
  share: Omit<FrozenShare, "bytes">;
  offset: number;
  length: number;
}

/**
 * Receives the shares of a sharded load (loadCausalLmParams' `shard`), then makes the layers usable again,
 * gathered over the group's ranks (`residency`).
 */
export interface LayerSharder {
  readonly load: ShardedLoad;
  residency(layers: readonly LayerParams[]): ShardedLayers;
}

const layoutKey = (s: Omit<FrozenShare, "bytes">): string => `${s.slot}:${s.dtype}:${s.shape.join("x")}:${s.perRank}`;

/** Shards over `group` (every rank of the job, or those of this machine under HYBRID_SHARD). */
export function createLayerSharder(be: Backend, group: GatherGroup): LayerSharder {
  const world = group.size;
  let layout: SlotLayout[] | undefined;
  let flatBytes = 0;
  const kept: LayerShares[] = [];
  return {
    load: {
      rank: group.index,
      world,
      allGather: (local) => group.allGather(local),
      keep(l, shares) {
          if (l !== kept.length) throw new TunaError("INTERNAL", `layer ${l} kept after ${kept.length} layers`);
          if (layout === undefined) {
            let offset = 0;
            layout = shares.map(({ bytes, ...share }) => {
              const slot = { share, offset, length: bytes.length };
              offset += bytes.length;
              return slot;
            });
            flatBytes = offset;
          }
          const expected = layout.map((s) => layoutKey(s.share)).join(",");
          if (shares.map((s) => layoutKey(s)).join(",") !== expected) throw new TunaError("INTERNAL", `layer ${l}'s frozen tensors differ from layer 0's`);
          const flat = new Uint8Array(flatBytes);
          shares.forEach((s, j) => {
            if (s.bytes.length % 4 !== 0) throw new TunaError("INTERNAL", `${s.slot}: a share of ${s.bytes.length} bytes is not whole words`);
            flat.set(s.bytes, layout![j]!.offset);
          });
          kept.push({ bytes: flat });
      },
    },
    residency(layers) {
      const slots = layout;
      if (slots === undefined || kept.length !== layers.length) throw new TunaError("INTERNAL", `${kept.length} of ${layers.length} layers were sharded`);
      const sets: Tensor[][] = [0, 1].map((k) => slots.map((s) => be.alloc(s.share.dtype, s.share.shape, `zero3.gathered${k}.${s.share.slot}`)));
      const placeholders = slots.map((s) => be.alloc(s.share.dtype, [1], `zero3.released.${s.share.slot}`));
      const bytesWhole = slots.reduce((sum, s) => sum + s.share.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[s.share.dtype], 0);

      /** All-gathers layer l's shares (one collective) into set k: rank r's share of slot j at r x flat + offset. */
      const gather = async (l: number, k: number): Promise<void> => {
        const own = kept[l]!.bytes;
        const all = await group.allGather(new Float32Array(own.buffer, own.byteOffset, own.byteLength / 4));
        const bytes = new Uint8Array(all.buffer, all.byteOffset, all.byteLength);
        slots.forEach((s, j) => {
          const t = sets[k]![j]!;
          const whole = new Uint8Array(world * s.length);
          for (let r = 0; r < world; r++) whole.set(bytes.subarray(r * flatBytes + s.offset, r * flatBytes + s.offset + s.length), r * s.length);
          be.upload(t, typed(whole.subarray(0, t.size * DTYPE_BYTES[t.dtype]), t.dtype));
        });
      };

      let current: { layer: number; set: number } | undefined;
      let prefetch: { layer: number; set: number; done: Promise<void> } | undefined;
      return {
        bytesHeld: flatBytes * layers.length,
        bytesWhole: bytesWhole * layers.length,
        async acquire(l, next) {
          if (current !== undefined) throw new TunaError("INTERNAL", `layer ${l} acquired while layer ${current.layer} still is`);
          let set: number;
          const pending = prefetch;
          prefetch = undefined;
          if (pending?.layer === l) {
            await pending.done;
            set = pending.set;
          } else {
            // Not the layer prefetched (or none was): let a prefetch in flight finish (the ranks issued it
            // too), then gather this one.
            if (pending !== undefined) await pending.done;
            set = pending === undefined ? 0 : 1 - pending.set;
            await gather(l, set);
          }
          current = { layer: l, set };
          slots.forEach((s, j) => {
            setFrozen(layers[l]!, s.share.slot, sets[set]![j]!);
          });
          if (next !== undefined) {
            const other = 1 - set;
            const done = gather(next, other);
            // Awaited by the acquire that uses it; marked handled so a failure surfaces there, not as an unhandled rejection.
            done.catch(() => undefined);
            prefetch = { layer: next, set: other, done };
          }
        },
        release(l) {
          if (current?.layer !== l) throw new TunaError("INTERNAL", `layer ${l} released but layer ${String(current?.layer)} is the one acquired`);
          slots.forEach((s, j) => {
            setFrozen(layers[l]!, s.share.slot, placeholders[j]!);
          });
          current = undefined;
        },
      };
    },
  };
}

/** `bytes` as the typed array a tensor of `dtype` uploads from (copied, so it is aligned). */
function typed(bytes: Uint8Array, dtype: Tensor["dtype"]): Float32Array | Int32Array | Uint8Array | Uint16Array {
  const copy = bytes.slice();
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
