// Runs one op on the CPU reference and on the CUDA backend with identical fresh random inputs and
// compares every output: relative error against the largest reference value, no NaN where the
// reference has none, and every element written (outputs start as NaN unless the op accumulates).
import assert from "node:assert/strict";
import { createCpuBackend } from "../src/backend/cpu/index.ts";
import { createCudaBackend, type CudaBackend } from "../src/backend/cuda/index.ts";
import type { Backend, DType, Tensor } from "../src/backend/types.ts";
import { f32ToBf16Array, f32ToF16Array } from "../src/util/half.ts";
import { createRng, type Rng } from "../src/util/random.ts";
import { numel } from "../src/util/shape.ts";

export const cpu: Backend = createCpuBackend({ threads: 4 });
let gpuBackend: CudaBackend | null = null;
export function gpu(): CudaBackend {
  gpuBackend ??= createCudaBackend();
  return gpuBackend;
}

export interface TensorSpec {
  dtype: DType;
  shape: number[];
  /** Host values (floats for float dtypes); absent = NaN-filled output to be overwritten. */
  data?: Float32Array | Int32Array | Uint8Array;
}

export type Tensors = Record<string, Tensor>;

export interface ParityResult {
  /** max |gpu - cpu| / max |cpu| per output. */
  errors: Record<string, number>;
}

function place(be: Backend, name: string, spec: TensorSpec): Tensor {
  const t = be.alloc(spec.dtype, spec.shape, name);
  const data = spec.data;
  if (data === undefined) {
    if (spec.dtype === "i32" || spec.dtype === "u8") be.fill(t, 0);
    else be.fill(t, Number.NaN);
    return t;
  }
  if (spec.dtype === "bf16") be.upload(t, f32ToBf16Array(data as Float32Array));
  else if (spec.dtype === "f16") be.upload(t, f32ToF16Array(data as Float32Array));
  else be.upload(t, data);
  return t;
}

/**
 * Runs `op` on both backends and checks `outputs` with tolerance `tol` (relative to the largest
 * reference magnitude). Returns the measured errors for the record.
 */
export async function parity(
  label: string,
  specs: Record<string, TensorSpec>,
  outputs: readonly string[],
  op: (be: Backend, t: Tensors) => unknown,
  tol: number,
): Promise<ParityResult> {
  const results: Record<string, Float32Array>[] = [];
  const scalars: unknown[] = [];
  for (const be of [cpu, gpu()]) {
    const t: Tensors = {};
    for (const [name, spec] of Object.entries(specs)) t[name] = place(be, name, spec);
    scalars.push(await op(be, t));
    const out: Record<string, Float32Array> = {};
    for (const name of outputs) out[name] = await be.downloadF32(t[name]!);
    results.push(out);
    for (const x of Object.values(t)) be.free(x);
  }
  const [ref, got] = results as [Record<string, Float32Array>, Record<string, Float32Array>];
  const errors: Record<string, number> = {};
  for (const name of outputs) {
    const a = ref[name]!;
    const b = got[name]!;
    let maxRef = 0;
    let maxDiff = 0;
    for (let i = 0; i < a.length; i++) {
      const x = a[i]!;
      const y = b[i]!;
      if (Number.isNaN(x)) continue;
      assert.ok(!Number.isNaN(y), `${label}: ${name}[${i}] is NaN on the GPU (reference ${x}): not written?`);
      maxRef = Math.max(maxRef, Math.abs(x));
      maxDiff = Math.max(maxDiff, Math.abs(x - y));
    }
    const rel = maxRef === 0 ? maxDiff : maxDiff / maxRef;
    errors[name] = rel;
    assert.ok(rel <= tol, `${label}: ${name} differs from the CPU reference by ${rel.toExponential(2)} (tolerance ${tol})`);
  }
  if (typeof scalars[0] === "number") {
    const [x, y] = scalars as [number, number];
    const rel = Math.abs(x - y) / Math.max(Math.abs(x), 1e-30);
    errors.result = rel;
    assert.ok(rel <= tol, `${label}: returned ${y} on the GPU, ${x} on the CPU`);
  }
  return { errors };
}

export function randn(r: Rng, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => r.normal() * scale);
}

export function floats(r: Rng, dtype: DType, shape: number[], scale = 1): TensorSpec {
  return { dtype, shape, data: randn(r, numel(shape), scale) };
}

export function out(dtype: DType, shape: number[]): TensorSpec {
  return { dtype, shape };
}

export function ints(data: number[] | Int32Array, shape?: number[]): TensorSpec {
  const arr = Int32Array.from(data);
  return { dtype: "i32", shape: shape ?? [arr.length], data: arr };
}

export function rng(seed: number): Rng {
  return createRng(seed);
}

/** Tolerance for outputs stored in dtype: bf16 output rounding is 2^-8 relative, so allow 2 ulps of the largest value. */
export function tolFor(dtype: DType): number {
  return dtype === "f32" ? 2e-5 : dtype === "bf16" ? 1e-2 : 2e-3;
}

/** Rows to record: label, output, error. */
export const measured: [string, string, number][] = [];

export function record(label: string, r: ParityResult): void {
  for (const [name, e] of Object.entries(r.errors)) measured.push([label, name, e]);
}
