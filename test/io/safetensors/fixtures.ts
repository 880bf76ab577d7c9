// Shared helpers of the safetensors tests: temporary folders, hand-crafted files, and an
// assertion that a promise rejects with a TunaError of a given code whose message says something.
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TunaError, type ErrorCode } from "../../../src/util/errors.ts";
import { isSafetensorsDtype } from "../../../src/io/safetensors/dtypes.ts";
import { openSafetensors } from "../../../src/io/safetensors/reader.ts";
import { writeSafetensors, type TensorToWrite } from "../../../src/io/safetensors/writer.ts";

export async function withTmpDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "tuna-st-"));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The 8-byte little-endian length, then the header bytes as given, then the data. */
export function craftBytes(header: string | Uint8Array, data: Uint8Array = new Uint8Array(0), lengthOverride?: bigint): Uint8Array {
  const headerBytes = typeof header === "string" ? new TextEncoder().encode(header) : header;
  const out = new Uint8Array(8 + headerBytes.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(data, 8 + headerBytes.length);
  return out;
}

export async function craftFile(
  dir: string,
  name: string,
  header: string | Uint8Array,
  data?: Uint8Array,
  lengthOverride?: bigint,
): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, craftBytes(header, data, lengthOverride));
  return path;
}

export async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, ...fragments: string[]): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof TunaError, `expected a TunaError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const f of fragments) assert.ok(e.message.includes(f), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`);
    return true;
  });
}

export function throwsWith(fn: () => unknown, code: ErrorCode, ...fragments: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof TunaError, `expected a TunaError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const f of fragments) assert.ok(e.message.includes(f), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`);
    return true;
  });
}

/** Deterministic pseudo-random bytes (a small LCG), so failures reproduce. */
export function patternBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let s = seed >>> 0;
  for (let i = 0; i < length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 24;
  }
  return out;
}

/**
 * Rewrites a safetensors file in place: `edit` gets each tensor's dtype and a copy of its bytes and returns
 * new bytes, the same (undefined) or null to drop the tensor. Metadata is kept.
 */
export async function rewriteSafetensors(file: string, edit: (name: string, data: Uint8Array, dtype: string) => Uint8Array | null | undefined): Promise<void> {
  const src = await openSafetensors(file);
  const tensors: TensorToWrite[] = [];
  for (const [name, info] of src.tensors) {
    const data = (await src.readTensor(name)).slice();
    const changed = edit(name, data, info.dtype);
    if (changed === null) continue;
    if (!isSafetensorsDtype(info.dtype)) throw new Error(`${file}: tensor ${name} has a dtype the writer does not know`);
    tensors.push({ name, dtype: info.dtype, shape: [...info.shape], data: changed ?? data });
  }
  await src.close();
  await writeSafetensors(file, tensors, src.metadata ?? undefined);
}
