// The argument-check vocabulary every backend's ops use: fail with TunaError("INTERNAL") naming the op, and
// the dtype, shape, rank and scalar checks on any tensor-shaped value (the public Tensor, the CUDA DeviceTensor).
import type { DType } from "./types.ts";
import { TunaError } from "../util/errors.ts";

/** What the checks read of a tensor: its metadata, never its storage. `name` is absent on device tensors. */
export interface TensorLike {
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** Number of elements. */
  readonly size: number;
  readonly name?: string;
}

export const FLOAT_DTYPES: readonly DType[] = ["f32", "bf16", "f16"];

export function fail(op: string, message: string): never {
  throw new TunaError("INTERNAL", `${op}: ${message}`);
}

export function shapeText(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/** The argument's role, plus its name when it has one: `weight "model.norm.weight"`. */
export function describe(what: string, t: TensorLike): string {
  return t.name === undefined || t.name === "" ? what : `${what} "${t.name}"`;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function expectShape(op: string, what: string, t: TensorLike, shape: readonly number[]): void {
  if (!sameShape(t.shape, shape)) fail(op, `${describe(what, t)} shape ${shapeText(t.shape)} does not match ${shapeText(shape)}`);
}

export function expectRank(op: string, what: string, t: TensorLike, rank: number): void {
  if (t.shape.length !== rank) fail(op, `${describe(what, t)} shape ${shapeText(t.shape)} is not of rank ${rank}`);
}

export function expectDtype(op: string, what: string, t: TensorLike, allowed: readonly DType[]): void {
  if (!allowed.includes(t.dtype)) fail(op, `${describe(what, t)} dtype ${t.dtype} is not ${allowed.join(" or ")}`);
}

export function expectFloat(op: string, what: string, t: TensorLike): void {
  expectDtype(op, what, t, FLOAT_DTYPES);
}

/** A scalar argument that must be a finite number (NaN or Infinity would silently poison every output). */
export function expectFinite(op: string, what: string, value: number): void {
  if (!Number.isFinite(value)) fail(op, `${what} is ${value}, expected a finite number`);
}

/** x's shape without its last axis (the rows a per-row op walks) and the last axis' length. */
export function splitLastAxis(op: string, what: string, t: TensorLike): { rows: number; cols: number } {
  const cols = t.shape[t.shape.length - 1];
  if (cols === undefined) fail(op, `${describe(what, t)} shape ${shapeText(t.shape)} has no axes`);
  return { rows: cols === 0 ? 0 : t.size / cols, cols };
}
