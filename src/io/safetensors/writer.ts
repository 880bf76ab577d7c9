// Writing .safetensors files byte-compatible with the reference Rust writer (specs/safetensors.md 1.3),
// atomically (temporary file, then rename), from memory or streamed one tensor at a time.
import { open, rename, rm, type FileHandle } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { TunaError } from "../../util/errors.ts";
import { dtypeBits, isSafetensorsDtype, tensorByteSize, type SafetensorsDtype } from "./dtypes.ts";
import { buildHeader, compareForWriting, type HeaderEntry } from "./header.ts";
import { fsError, writeFully } from "./fs-errors.ts";

export interface TensorSpec {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
}

export interface TensorToWrite extends TensorSpec {
  data: Uint8Array;
}

/** Where each tensor goes in a file about to be written. */
export interface FilePlan {
  /** The 8-byte length followed by the padded header. */
  prefix: Uint8Array;
  /** In file order, with byteLength; offsets are relative to the data section. */
  entries: (HeaderEntry & { spec: TensorSpec; byteLength: number })[];
  /** Total file size in bytes. */
  fileBytes: number;
}

/**
 * Checks the specs (unique names, known dtypes, valid shapes, whole bytes), sorts them as the
 * reference writer does and builds the header. metadata always carries "format":"pt", which
 * transformers requires when `__metadata__` is present.
 */
export function planSafetensorsFile(specs: readonly TensorSpec[], metadata?: Record<string, string>): FilePlan {
  const seen = new Set<string>();
  for (const spec of specs) {
    if (spec.name === "__metadata__") throw invalidTensor(spec.name, `the name "__metadata__" is reserved for the file metadata`);
    if (seen.has(spec.name)) throw invalidTensor(spec.name, "the name is given twice; every tensor of a file needs a unique name");
    seen.add(spec.name);
    if (!isSafetensorsDtype(spec.dtype)) throw invalidTensor(spec.name, `unknown dtype ${JSON.stringify(spec.dtype)}`);
    if (!spec.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw invalidTensor(spec.name, `shape [${spec.shape.join(", ")}] is not a list of non-negative integers`);
    }
  }
  const sorted = [...specs].sort(compareForWriting);
  const entries: FilePlan["entries"] = [];
  let offset = 0;
  for (const spec of sorted) {
    const size = tensorByteSize(spec.dtype, spec.shape);
    if (size === undefined) {
      throw invalidTensor(spec.name, `${spec.dtype} shape [${spec.shape.join(", ")}] is not a whole number of bytes (${dtypeBits(spec.dtype)} bits per element)`);
    }
    if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidTensor(spec.name, `shape [${spec.shape.join(", ")}] is too large`);
    const byteLength = Number(size);
    entries.push({ name: spec.name, dtype: spec.dtype, shape: [...spec.shape], begin: offset, end: offset + byteLength, spec, byteLength });
    offset += byteLength;
  }
  const header = buildHeader(entries, withFormat(metadata));
  const prefix = new Uint8Array(8 + header.length);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(header.length), true);
  prefix.set(header, 8);
  return { prefix, entries, fileBytes: prefix.length + offset };
}

function withFormat(metadata: Record<string, string> | undefined): Record<string, string> {
  const out: [string, string][] = [["format", "pt"]];
  for (const [k, v] of Object.entries(metadata ?? {})) {
    if (typeof v !== "string") throw new TunaError("INTERNAL", `safetensors metadata "${k}" must be a string, got ${typeof v}`);
    if (k === "format" && v !== "pt") {
      throw new TunaError("INTERNAL", `safetensors metadata "format" must be "pt" (transformers checks it), got "${v}"`);
    }
    if (k !== "format") out.push([k, v]);
  }
  return Object.fromEntries(out);
}

function invalidTensor(name: string, what: string): TunaError {
  return new TunaError("INTERNAL", `cannot write tensor "${name}" to safetensors: ${what}`);
}

function checkLength(spec: TensorSpec, expected: number, data: Uint8Array): void {
  if (data.byteLength !== expected) {
    throw invalidTensor(
      spec.name,
      `${spec.dtype} shape [${spec.shape.join(", ")}] needs ${expected} bytes but its data has ${data.byteLength}`,
    );
  }
}

export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): Promise<void> {
  const plan = planSafetensorsFile(tensors, metadata);
  await writePlanned(path, plan, checkTensorData(plan, tensors));
}

/**
 * Checks every tensor's data length against its planned size before any file is created, so a bad
 * tensor leaves nothing behind; returns the `produce` function that hands out the data.
 */
export function checkTensorData(plan: FilePlan, tensors: readonly TensorToWrite[]): (spec: TensorSpec) => Promise<Uint8Array> {
  const data = new Map(tensors.map((t) => [t.name, t.data]));
  const dataOf = (spec: TensorSpec): Uint8Array => data.get(spec.name) ?? new Uint8Array(0);
  for (const e of plan.entries) checkLength(e.spec, e.byteLength, dataOf(e.spec));
  return (spec) => Promise.resolve(dataOf(spec));
}

/** Writes a small file (an index) with the same temporary-file-then-rename guarantee. */
export async function writeBytesAtomically(path: string, bytes: Uint8Array): Promise<void> {
  await writePlanned(path, { prefix: bytes, entries: [], fileBytes: bytes.length }, () => Promise.resolve(new Uint8Array(0)));
}

/**
 * Writes a file whose tensors are produced one at a time, in file order, so that only one tensor
 * is held in memory (e.g. merging LoRA into a large model). `produce` gets the caller's spec objects.
 */
export async function writeSafetensorsStreaming(
  path: string,
  specs: readonly TensorSpec[],
  produce: (spec: TensorSpec) => Promise<Uint8Array>,
  metadata?: Record<string, string>,
): Promise<void> {
  await writePlanned(path, planSafetensorsFile(specs, metadata), produce);
}

export async function writePlanned(
  path: string,
  plan: FilePlan,
  produce: (spec: TensorSpec) => Promise<Uint8Array>,
): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`;
  let handle: FileHandle;
  try {
    handle = await open(tmp, "wx");
  } catch (e) {
    throw fsError(tmp, "create", e);
  }
  try {
    try {
      await writeFully(handle, plan.prefix, 0);
    } catch (e) {
      throw fsError(tmp, "write", e);
    }
    let position = plan.prefix.length;
    for (const e of plan.entries) {
      const data = await produce(e.spec);
      checkLength(e.spec, e.byteLength, data);
      try {
        await writeFully(handle, data, position);
      } catch (err) {
        throw fsError(tmp, "write", err);
      }
      position += e.byteLength;
    }
    try {
      await handle.sync();
    } catch (e) {
      throw fsError(tmp, "flush", e);
    }
  } catch (e) {
    await handle.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw e;
  }
  try {
    await handle.close();
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw fsError(path, "move the finished file into place at", e);
  }
}
