// The CPU backend's memory ops on the tensor store: upload, download (raw and as float32), fill and copy.
// Float copies between dtypes round through float32 to nearest even; integer tensors copy only to their own dtype.
import type { Tensor } from "../types.ts";
import { describe, expectShape, fail } from "../checks.ts";
import { encodeScalar, readFloats, writeFloats, type TensorStore } from "./store.ts";

type HostData = Float32Array | Int32Array | Uint8Array | Uint16Array;

function matchesHostArray(t: Tensor, data: HostData): boolean {
  switch (t.dtype) {
    case "f32":
      return data instanceof Float32Array;
    case "bf16":
    case "f16":
      return data instanceof Uint16Array;
    case "i32":
      return data instanceof Int32Array;
    case "u8":
      return data instanceof Uint8Array;
  }
}

function hostArrayName(t: Tensor): string {
  switch (t.dtype) {
    case "f32":
      return "Float32Array";
    case "bf16":
    case "f16":
      return "Uint16Array";
    case "i32":
      return "Int32Array";
    case "u8":
      return "Uint8Array";
  }
}

export function upload(store: TensorStore, t: Tensor, data: HostData): void {
  const slot = store.get("upload", "tensor", t);
  if (!matchesHostArray(t, data) || data.length !== t.size) {
    fail("upload", `${describe("tensor", t)} (${t.dtype}, ${t.size} elements) takes a ${hostArrayName(t)} of ${t.size}, got a ${data.constructor.name} of ${data.length}`);
  }
  slot.data.set(data);
}

export function download(store: TensorStore, t: Tensor): HostData {
  // slice() gives a fresh, unshared buffer: the caller owns the copy.
  return store.get("download", "tensor", t).data.slice();
}

export function downloadF32(store: TensorStore, t: Tensor): Float32Array {
  const slot = store.get("downloadF32", "tensor", t);
  if (slot.data instanceof Int32Array || slot.data instanceof Uint8Array) return Float32Array.from(slot.data);
  const values = readFloats(slot);
  return values === slot.data ? values.slice() : values;
}

export function fill(store: TensorStore, t: Tensor, value: number): void {
  const slot = store.get("fill", "tensor", t);
  slot.data.fill(encodeScalar("fill", t.dtype, value));
}

export function copy(store: TensorStore, dst: Tensor, src: Tensor): void {
  const dstSlot = store.get("copy", "dst", dst);
  const srcSlot = store.get("copy", "src", src);
  expectShape("copy", "dst", dst, src.shape);
  if (dst.dtype === src.dtype) {
    // TypedArray.set copes with overlapping ranges of one buffer.
    dstSlot.data.set(srcSlot.data);
    return;
  }
  const isFloat = (d: string): boolean => d === "f32" || d === "bf16" || d === "f16";
  if (!isFloat(dst.dtype) || !isFloat(src.dtype)) {
    fail("copy", `cannot copy ${describe("src", src)} (${src.dtype}) into ${describe("dst", dst)} (${dst.dtype}): only float dtypes convert`);
  }
  // Different dtypes means different storage (views keep their root's dtype), so nothing overlaps here.
  writeFloats(dstSlot, readFloats(srcSlot));
}
