// Shared pieces of the CPU backend tests: seeded data, tensors from host arrays, float64 vector checks,
// and the central-difference gradient check every backward test uses.
import assert from "node:assert/strict";
import type { Backend, DType, Tensor } from "../../../src/backend/types.ts";
import { createCpuBackend } from "../../../src/backend/cpu/index.ts";
import { createRng, type Rng } from "../../../src/util/random.ts";
import { bf16BitsToF32, f32ToBf16Bits } from "../../../src/util/half.ts";
import { isTunaError } from "../../../src/util/errors.ts";

/** One backend per test file: single-threaded, so results do not depend on the machine. */
export function backend(threads = 1): Backend {
  return createCpuBackend({ threads });
}

export function rng(seed: number): Rng {
  return createRng(seed);
}

/** n normal draws times `scale`, as float32. */
export function randn(r: Rng, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => r.normal() * scale);
}

/** n normal draws rounded to bf16 (values a bf16 tensor can hold exactly), as float32. */
export function randnBf16(r: Rng, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => bf16BitsToF32(f32ToBf16Bits(r.normal() * scale)));
}

export function bf16Bits(values: Float32Array): Uint16Array {
  return Uint16Array.from(values, (v) => f32ToBf16Bits(v));
}

/** A tensor holding `values` (converted to the dtype: bf16 rounds to nearest even). */
export function tensorOf(be: Backend, shape: readonly number[], values: Float32Array, dtype: DType = "f32", name = ""): Tensor {
  const t = be.alloc(dtype, shape, name);
  if (dtype === "bf16") be.upload(t, bf16Bits(values));
  else if (dtype === "f32") be.upload(t, values);
  else throw new Error(`tensorOf: unsupported dtype ${dtype}`);
  return t;
}

export function intsOf(be: Backend, values: readonly number[], name = ""): Tensor {
  const t = be.alloc("i32", [values.length], name);
  be.upload(t, Int32Array.from(values));
  return t;
}

export async function values(be: Backend, t: Tensor): Promise<Float32Array> {
  return be.downloadF32(t);
}

/** ||a - b|| / ||b|| (L2 over the whole tensor), so tiny entries do not dominate. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, "relativeError: lengths differ");
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number, what: string): void {
  const err = relativeError(actual, expected);
  assert.ok(err <= tolerance, `${what}: relative error ${err.toExponential(2)} exceeds ${tolerance.toExponential(1)}`);
}

/** Each element within `ulps` float32 units in the last place of the expected value (plus a tiny absolute floor). */
export function assertUlps(actual: ArrayLike<number>, expected: ArrayLike<number>, ulps: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: lengths differ`);
  for (let i = 0; i < actual.length; i++) {
    const e = expected[i]!;
    const ulp = Math.max(Math.abs(e), 2 ** -126) * 2 ** -23;
    const diff = Math.abs(actual[i]! - e);
    assert.ok(diff <= ulps * ulp + 1e-30, `${what}[${i}]: ${actual[i]} vs ${e} differs by ${(diff / ulp).toFixed(2)} ulp`);
  }
}

/** sum(out * r) in float64: the scalar whose gradient with respect to out is r. */
export function project(out: ArrayLike<number>, r: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < out.length; i++) s += out[i]! * r[i]!;
  return s;
}

/**
 * Central differences of `loss` with respect to every element of `x` (float32 values), compared with the
 * analytic gradient as a whole. The step is taken in float32, so the divisor is the step that really happened.
 */
export async function checkGradient(
  what: string,
  x: Float32Array,
  analytic: ArrayLike<number>,
  loss: (x: Float32Array) => Promise<number>,
  tolerance = 1e-2,
  step = 1e-2,
): Promise<void> {
  const numeric = new Float64Array(x.length);
  const probe = x.slice();
  for (let i = 0; i < x.length; i++) {
    const plus = Math.fround(x[i]! + step);
    const minus = Math.fround(x[i]! - step);
    probe[i] = plus;
    const up = await loss(probe);
    probe[i] = minus;
    const down = await loss(probe);
    probe[i] = x[i]!;
    numeric[i] = (up - down) / (plus - minus);
  }
  assertClose(analytic, numeric, tolerance, `${what} gradient vs central differences`);
}

/** Asserts `fn` throws TunaError INTERNAL whose message contains every fragment. */
export function assertInternal(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isTunaError(e), `expected a TunaError, got ${String(e)}`);
    assert.equal(e.code, "INTERNAL");
    for (const f of fragments) assert.ok(e.message.includes(f), `message "${e.message}" lacks "${f}"`);
    return true;
  });
}
