// Writing a GGUF v3 file: the header (metadata, then tensor descriptions with aligned offsets) and the
// tensor data streamed one tensor at a time, into a temporary file renamed into place at the end, so the
// target path never holds a half-written model. Written by hand: no npm package writes GGUF tensors.
import { open, rename, rm, type FileHandle } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { dirname, basename, join } from "node:path";
import { TunaError } from "../../util/errors.ts";
import { fsError, writeFully } from "../safetensors/fs-errors.ts";
import { GGML_TYPES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VALUE_TYPES, GGUF_VERSION, ggmlTensorBytes, type GgmlTypeName, type GgufScalarKind, type GgufValue } from "./format.ts";

export interface GgufTensorToWrite {
  name: string;
  type: GgmlTypeName;
  /** ggml dimensions: ne[0] is the row length (a [out, in] matrix is ne = [in, out]). */
  ne: number[];
  /** The tensor's bytes in `type`, produced when its turn comes. */
  data: () => Promise<Uint8Array> | Uint8Array;
}

/** Little-endian bytes appended to a growing buffer. */
class ByteSink {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;
  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number): void {
    this.reserve(1);
    this.view.setUint8(this.length, v);
    this.length += 1;
  }
  u32(v: number): void {
    this.reserve(4);
    this.view.setUint32(this.length, v, true);
    this.length += 4;
  }
  u64(v: number | bigint): void {
    this.reserve(8);
    this.view.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }
  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  string(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.bytes(b);
  }
  scalar(kind: GgufScalarKind, v: number | bigint | boolean | string): void {
    const size = { uint8: 1, int8: 1, bool: 1, uint16: 2, int16: 2, uint32: 4, int32: 4, float32: 4, uint64: 8, int64: 8, float64: 8, string: 0 }[kind];
    if (kind === "string") {
      if (typeof v !== "string") throw new TunaError("INTERNAL", `GGUF string value expected, got ${typeof v}`);
      this.string(v);
      return;
    }
    this.reserve(size);
    const at = this.length;
    const n = typeof v === "boolean" ? (v ? 1 : 0) : v;
    switch (kind) {
      case "uint8":
      case "bool":
        this.view.setUint8(at, Number(n));
        break;
      case "int8":
        this.view.setInt8(at, Number(n));
        break;
      case "uint16":
        this.view.setUint16(at, Number(n), true);
        break;
      case "int16":
        this.view.setInt16(at, Number(n), true);
        break;
      case "uint32":
        this.view.setUint32(at, Number(n), true);
        break;
      case "int32":
        this.view.setInt32(at, Number(n), true);
        break;
      case "float32":
        this.view.setFloat32(at, Number(n), true);
        break;
      case "float64":
        this.view.setFloat64(at, Number(n), true);
        break;
      case "uint64":
        this.view.setBigUint64(at, BigInt(n), true);
        break;
      case "int64":
        this.view.setBigInt64(at, BigInt(n), true);
        break;
    }
    this.length += size;
  }
  pad(alignment: number): void {
    while (this.length % alignment !== 0) this.u8(0);
  }
  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

/** The header (magic through the padding before the data section) and each tensor's offset in the data section. */
export function buildGgufHeader(
  metadata: ReadonlyMap<string, GgufValue>,
  tensors: readonly Pick<GgufTensorToWrite, "name" | "type" | "ne">[],
): { header: Uint8Array; offsets: number[]; sizes: number[]; alignment: number } {
  const alignValue = metadata.get("general.alignment");
  const alignment = alignValue?.kind === "uint32" ? alignValue.value : GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment <= 0 || alignment % 8 !== 0) {
    throw new TunaError("INTERNAL", `general.alignment must be a positive multiple of 8, got ${alignment}`);
  }
  const seen = new Set<string>();
  const sink = new ByteSink();
  sink.u32(GGUF_MAGIC);
  sink.u32(GGUF_VERSION);
  sink.u64(tensors.length);
  sink.u64(metadata.size);
  for (const [key, value] of metadata) {
    sink.string(key);
    sink.u32(GGUF_VALUE_TYPES[value.kind]);
    if (value.kind === "array") {
      sink.u32(GGUF_VALUE_TYPES[value.itemKind]);
      sink.u64(value.values.length);
      for (const item of value.values) sink.scalar(value.itemKind, item);
    } else {
      sink.scalar(value.kind, value.value);
    }
  }
  const offsets: number[] = [];
  const sizes: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    if (seen.has(t.name)) throw new TunaError("INTERNAL", `GGUF tensor ${t.name} is given twice`);
    seen.add(t.name);
    if (new TextEncoder().encode(t.name).length >= 64) throw new TunaError("INTERNAL", `GGUF tensor name ${t.name} is longer than ggml's 63 bytes`);
    sink.string(t.name);
    sink.u32(t.ne.length);
    for (const d of t.ne) sink.u64(d);
    sink.u32(GGML_TYPES[t.type]);
    sink.u64(offset);
    offsets.push(offset);
    const size = ggmlTensorBytes(t.type, t.ne);
    sizes.push(size);
    offset = alignUp(offset + size, alignment);
  }
  sink.pad(alignment);
  return { header: sink.result(), offsets, sizes, alignment };
}

/**
 * Writes `path` as a GGUF file: metadata in the order given, tensors in the order given. Each tensor's
 * bytes are asked for in turn and must have the size its type and shape imply.
 */
export async function writeGguf(
  path: string,
  metadata: ReadonlyMap<string, GgufValue>,
  tensors: readonly GgufTensorToWrite[],
  onTensor?: (progress: { name: string; index: number; total: number }) => void,
): Promise<{ bytes: number }> {
  const { header, offsets, sizes, alignment } = buildGgufHeader(metadata, tensors);
  const temp = join(dirname(path), `.${basename(path)}.tmp-${randomBytes(4).toString("hex")}`);
  let handle: FileHandle | undefined;
  try {
    handle = await open(temp, "wx").catch((e: unknown) => {
      throw fsError(temp, "create", e);
    });
    await writeFully(handle, header, 0);
    const dataStart = header.length;
    let end = dataStart;
    for (const [i, t] of tensors.entries()) {
      const bytes = await t.data();
      if (bytes.length !== sizes[i]) {
        throw new TunaError("INTERNAL", `GGUF tensor ${t.name}: ${bytes.length} bytes given, ${t.type} [${t.ne.join(", ")}] takes ${sizes[i]}`);
      }
      const at = dataStart + offsets[i]!;
      if (at > end) await writeFully(handle, new Uint8Array(at - end), end); // alignment padding
      await writeFully(handle, bytes, at);
      end = at + bytes.length;
      onTensor?.({ name: t.name, index: i, total: tensors.length });
    }
    const padded = dataStart + alignUp(end - dataStart, alignment); // the last tensor is padded too, as gguf.c writes
    if (padded > end) await writeFully(handle, new Uint8Array(padded - end), end);
    end = padded;
    await handle.sync().catch((e: unknown) => {
      throw fsError(temp, "flush", e);
    });
    await handle.close();
    handle = undefined;
    await rename(temp, path).catch((e: unknown) => {
      throw fsError(path, "move the finished file into place at", e);
    });
    return { bytes: end };
  } finally {
    await handle?.close().catch(() => undefined);
    await rm(temp, { force: true });
  }
}
