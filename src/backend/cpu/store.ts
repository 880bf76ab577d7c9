// The CPU backend's tensor store: handles, typed-array storage (SharedArrayBuffer when worker threads share it),
// views into the same storage, copies in and out, and reading or writing any float dtype as float32.
import { DTYPE_BYTES, type DType, type Tensor } from "../types.ts";
import { bf16ToF32Array, f16ToF32Array, f32ToBf16Array, f32ToF16Array, f32ToBf16Bits, f32ToF16Bits } from "../../util/half.ts";
import { describe, fail, shapeText } from "../checks.ts";

export type Storage = Float32Array | Uint16Array | Int32Array | Uint8Array;

interface Root {
  freed: boolean;
}

/** A live tensor: its handle, its elements (exactly tensor.size of them) and the storage they live in. */
export interface Slot {
  readonly tensor: Tensor;
  readonly data: Storage;
  readonly root: Root;
  /** Elements from the start of the root storage, for overlap checks. */
  readonly offset: number;
  readonly owner: boolean;
  /** A freed view (an owner is freed through its root). */
  viewFreed: boolean;
}

export interface TensorStore {
  /** Whether storage is SharedArrayBuffer-backed (worker threads read and write it). */
  readonly shared: boolean;
  alloc(dtype: DType, shape: readonly number[], name?: string): Tensor;
  free(t: Tensor): void;
  /** The live slot of a handle; `what` names the argument in the error if it is not one. */
  get(op: string, what: string, t: Tensor): Slot;
  rows(t: Tensor, start: number, count: number): Tensor;
  view(t: Tensor, shape: readonly number[]): Tensor;
  /** How many allocations are live, for leak checks in tests (views are not counted: they own nothing). */
  liveCount(): number;
  /** Bytes of live allocations now, and the most there have been at once (views own nothing). */
  bytesInUse(): number;
  peakBytesInUse(): number;
}


function checkShape(op: string, shape: readonly number[]): number {
  let size = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) fail(op, `shape ${shapeText(shape)} has a dimension that is not a non-negative integer`);
    size *= d;
  }
  return size;
}

function newStorage(dtype: DType, size: number, shared: boolean): Storage {
  const buffer = shared ? new SharedArrayBuffer(size * DTYPE_BYTES[dtype]) : new ArrayBuffer(size * DTYPE_BYTES[dtype]);
  switch (dtype) {
    case "f32":
      return new Float32Array(buffer);
    case "bf16":
    case "f16":
      return new Uint16Array(buffer);
    case "i32":
      return new Int32Array(buffer);
    case "u8":
      return new Uint8Array(buffer);
  }
}

/** A float32 array of n zeros, shared with worker threads when `shared`. */
export function newF32(n: number, shared: boolean): Float32Array {
  return new Float32Array(shared ? new SharedArrayBuffer(n * 4) : new ArrayBuffer(n * 4));
}

export function createTensorStore(shared: boolean): TensorStore {
  // Owners are held until freed. Views (made freely by callers, per op call) are keyed weakly by their
  // handle, so a view nobody references any more is collected: no table grows step after step.
  const owners = new Map<number, Slot>();
  const views = new WeakMap<Tensor, Slot>();
  let nextId = 1;
  let inUse = 0;
  let peak = 0;

  const register = (dtype: DType, shape: readonly number[], size: number, name: string, data: Storage, root: Root, offset: number, owner: boolean): Tensor => {
    const tensor: Tensor = Object.freeze({ id: nextId++, dtype, shape: Object.freeze([...shape]), size, name });
    const slot: Slot = { tensor, data, root, offset, owner, viewFreed: false };
    if (owner) owners.set(tensor.id, slot);
    else views.set(tensor, slot);
    return tensor;
  };

  const get = (op: string, what: string, t: Tensor): Slot => {
    const slot = views.get(t) ?? owners.get(t.id);
    if (slot?.tensor !== t || slot.root.freed || slot.viewFreed) {
      fail(op, `${describe(what, t)} (id ${t.id}) is not a live tensor of this backend: it was freed, or comes from another backend`);
    }
    return slot;
  };

  return {
    shared,
    alloc(dtype, shape, name = "") {
      if (!(dtype in DTYPE_BYTES)) fail("alloc", `unknown dtype ${dtype}`);
      const size = checkShape("alloc", shape);
      inUse += size * DTYPE_BYTES[dtype];
      peak = Math.max(peak, inUse);
      return register(dtype, shape, size, name, newStorage(dtype, size, shared), { freed: false }, 0, true);
    },
    free(t) {
      const slot = get("free", "tensor", t);
      if (slot.owner) {
        // Its views share the root, so they are dead from now on too.
        owners.delete(t.id);
        slot.root.freed = true;
        inUse -= t.size * DTYPE_BYTES[t.dtype];
      } else {
        slot.viewFreed = true;
      }
    },
    get,
    rows(t, start, count) {
      const slot = get("rows", "tensor", t);
      const first = t.shape[0];
      if (first === undefined) fail("rows", `${describe("tensor", t)} has shape [] (no first axis to take rows of)`);
      if (!Number.isSafeInteger(start) || !Number.isSafeInteger(count) || start < 0 || count < 0 || start + count > first) {
        fail("rows", `rows [${start}, ${start + count}) are not inside ${describe("tensor", t)} of shape ${shapeText(t.shape)}`);
      }
      const rowSize = first === 0 ? 0 : t.size / first;
      const data = slot.data.subarray(start * rowSize, (start + count) * rowSize);
      const name = `${t.name}[${start}:${start + count}]`;
      return register(t.dtype, [count, ...t.shape.slice(1)], count * rowSize, name, data, slot.root, slot.offset + start * rowSize, false);
    },
    view(t, shape) {
      const slot = get("view", "tensor", t);
      const size = checkShape("view", shape);
      if (size !== t.size) fail("view", `shape ${shapeText(shape)} has ${size} elements, ${describe("tensor", t)} of shape ${shapeText(t.shape)} has ${t.size}`);
      return register(t.dtype, shape, size, t.name, slot.data, slot.root, slot.offset, false);
    },
    liveCount: () => owners.size,
    bytesInUse: () => inUse,
    peakBytesInUse: () => peak,
  };
}

/** Whether two slots share any element (same storage, intersecting ranges). */
export function overlaps(a: Slot, b: Slot): boolean {
  return a.root === b.root && a.offset < b.offset + b.tensor.size && b.offset < a.offset + a.tensor.size;
}

export function f32Data(op: string, what: string, slot: Slot): Float32Array {
  if (!(slot.data instanceof Float32Array)) fail(op, `${describe(what, slot.tensor)} dtype ${slot.tensor.dtype} is not f32`);
  return slot.data;
}

export function i32Data(op: string, what: string, slot: Slot): Int32Array {
  if (!(slot.data instanceof Int32Array)) fail(op, `${describe(what, slot.tensor)} dtype ${slot.tensor.dtype} is not i32`);
  return slot.data;
}

export function u8Data(op: string, what: string, slot: Slot): Uint8Array {
  if (!(slot.data instanceof Uint8Array)) fail(op, `${describe(what, slot.tensor)} dtype ${slot.tensor.dtype} is not u8`);
  return slot.data;
}

/**
 * A float tensor's values as float32: f32 storage itself (no copy: do not write to it unless it is the
 * output), bf16/f16 converted into a new array (shared with worker threads when `shared`).
 */
export function readFloats(slot: Slot, shared = false): Float32Array {
  const { data, tensor } = slot;
  if (data instanceof Float32Array) return data;
  if (data instanceof Uint16Array) {
    const out = newF32(data.length, shared);
    return tensor.dtype === "bf16" ? bf16ToF32Array(data, out) : f16ToF32Array(data, out);
  }
  return fail("readFloats", `${describe("tensor", tensor)} dtype ${tensor.dtype} is not a float dtype`);
}

/**
 * Where an op writes a float output as float32: the f32 storage itself, or for bf16/f16 a scratch array
 * (holding the current values when `keep`, for accumulation) that writeFloats rounds back.
 */
export function outputFloats(slot: Slot, keep: boolean, shared = false): Float32Array {
  if (slot.data instanceof Float32Array) return slot.data;
  return keep ? readFloats(slot, shared) : newF32(slot.tensor.size, shared);
}

/** Stores float32 values into a float tensor, rounding to nearest even for bf16/f16. */
export function writeFloats(slot: Slot, values: Float32Array): void {
  const { data, tensor } = slot;
  if (data instanceof Float32Array) {
    if (values !== data) data.set(values);
  } else if (data instanceof Uint16Array) {
    if (tensor.dtype === "bf16") f32ToBf16Array(values, data);
    else f32ToF16Array(values, data);
  } else {
    fail("writeFloats", `${describe("tensor", tensor)} dtype ${tensor.dtype} is not a float dtype`);
  }
}

/** The storage pattern of one number in a dtype (float dtypes round through float32). */
export function encodeScalar(op: string, dtype: DType, value: number): number {
  switch (dtype) {
    case "f32":
      return value;
    case "bf16":
      return f32ToBf16Bits(value);
    case "f16":
      return f32ToF16Bits(value);
    case "i32":
      if (!Number.isInteger(value) || value < -(2 ** 31) || value >= 2 ** 31) fail(op, `${value} is not an i32 value`);
      return value;
    case "u8":
      if (!Number.isInteger(value) || value < 0 || value > 255) fail(op, `${value} is not a u8 value`);
      return value;
  }
}

/** Elements [start, start+count) of a float tensor as float32 (a view for f32, a converted copy otherwise). */
export function readFloatsRange(slot: Slot, start: number, count: number): Float32Array {
  const { data, tensor } = slot;
  if (data instanceof Float32Array) return data.subarray(start, start + count);
  if (data instanceof Uint16Array) {
    const part = data.subarray(start, start + count);
    return tensor.dtype === "bf16" ? bf16ToF32Array(part) : f16ToF32Array(part);
  }
  return fail("readFloatsRange", `${describe("tensor", tensor)} dtype ${tensor.dtype} is not a float dtype`);
}

/** Stores float32 values at elements [start, start+values.length) of a float tensor, rounding for bf16/f16. */
export function writeFloatsRange(slot: Slot, start: number, values: Float32Array): void {
  const { data, tensor } = slot;
  if (data instanceof Float32Array) {
    data.set(values, start);
  } else if (data instanceof Uint16Array) {
    const part = data.subarray(start, start + values.length);
    if (tensor.dtype === "bf16") f32ToBf16Array(values, part);
    else f32ToF16Array(values, part);
  } else {
    fail("writeFloatsRange", `${describe("tensor", tensor)} dtype ${tensor.dtype} is not a float dtype`);
  }
}

type Named = readonly [string, Slot];

/**
 * Throws unless outputs share no storage with each other or with the inputs. With `exactAlias`, an output
 * may be exactly an input (the same elements), for ops that read each element, or each row, before writing it.
 */
export function expectSeparate(op: string, outputs: readonly Named[], inputs: readonly Named[], exactAlias = false): void {
  outputs.forEach(([what, slot], i) => {
    for (const [otherWhat, other] of outputs.slice(i + 1)) {
      if (overlaps(slot, other)) fail(op, `${describe(what, slot.tensor)} and ${describe(otherWhat, other.tensor)} share storage`);
    }
    for (const [inWhat, input] of inputs) {
      if (!overlaps(slot, input)) continue;
      const exact = slot.offset === input.offset && slot.tensor.size === input.tensor.size;
      if (exactAlias && exact) continue;
      const allowed = exactAlias ? "; it may only be exactly the same tensor" : "; write to a separate tensor";
      fail(op, `${describe(what, slot.tensor)} shares storage with ${describe(inWhat, input.tensor)}${allowed}`);
    }
  });
}
