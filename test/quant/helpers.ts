// Shared helpers of the quantization tests: float32 neighbours by bit pattern, a seeded normal
// generator, unpacking nibbles, temporary folders and a TunaError assertion.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TunaError, type ErrorCode } from "../../src/util/errors.ts";

const scratch = new Float32Array(1);
const scratchBits = new Int32Array(scratch.buffer);

/** The next float32 above x (x a float32, not NaN or +inf). */
export function nextUpF32(x: number): number {
  if (x === 0) return 2 ** -149;
  scratch[0] = x;
  scratchBits[0] = x > 0 ? scratchBits[0]! + 1 : scratchBits[0]! - 1;
  return scratch[0];
}

/** The next float32 below x. */
export function nextDownF32(x: number): number {
  return -nextUpF32(-x);
}

/** Float32 values from a seeded LCG through Box-Muller (deterministic test data). */
export function normalF32(n: number, seed: number, std = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  const uniform = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 1) / 4294967297;
  };
  for (let i = 0; i < n; i++) out[i] = std * Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return out;
}

/** The 4-bit codes of n elements from packed bytes (element 2j = high nibble of byte j). */
export function unpackNibbles(packed: Uint8Array, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(i % 2 === 0 ? packed[i >> 1]! >> 4 : packed[i >> 1]! & 15);
  return out;
}

export async function withTmpDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "tuna-quant-"));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export function assertTunaError(e: unknown, code: ErrorCode, ...fragments: string[]): true {
  assert.ok(e instanceof TunaError, `expected a TunaError, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  for (const f of fragments) assert.ok(e.message.includes(f), `message lacks "${f}": ${e.message}`);
  return true;
}
