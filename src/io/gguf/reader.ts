// Reading a GGUF v2/v3 file: its metadata and tensor descriptions (parsed once, every count and length
// checked against the file's size so a hostile file fails with FILE_FORMAT instead of a huge allocation),
// and any tensor's bytes on request.
import { open, type FileHandle } from "node:fs/promises";
import { TunaError } from "../../util/errors.ts";
import { fsError, readFully } from "../safetensors/fs-errors.ts";
import { GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VALUE_TYPES, ggmlTensorBytes, ggmlTypeName, type GgufScalarKind, type GgufTensorInfo, type GgufValue } from "./format.ts";

/** A path that names a GGUF file (by its extension, as llama.cpp's tools name them). */
export function isGgufPath(path: string): boolean {
  return path.toLowerCase().endsWith(".gguf");
}

export interface GgufFile {
  readonly path: string;
  readonly version: number;
  readonly metadata: ReadonlyMap<string, GgufValue>;
  readonly tensors: readonly GgufTensorInfo[];
  /** Byte position of the data section (tensor offsets are relative to it). */
  readonly dataStart: number;
  readonly alignment: number;
  readTensor(name: string): Promise<Uint8Array>;
  close(): Promise<void>;
}

const KIND_BY_CODE = new Map<number, keyof typeof GGUF_VALUE_TYPES>(Object.entries(GGUF_VALUE_TYPES).map(([k, v]) => [v, k as keyof typeof GGUF_VALUE_TYPES]));

/**
 * The shortest decimal that rounds to the same float32: a file's 1e-5 is stored as 9.99999974e-6, and the
 * config it came from said 1e-5 (what transformers and llama.cpp both mean by it).
 */
export function shortestFloat32(v: number): number {
  if (!Number.isFinite(v) || v === 0) return v;
  for (let digits = 1; digits <= 9; digits++) {
    const d = Number(v.toPrecision(digits));
    if (Math.fround(d) === v) return d;
  }
  return v;
}

/** Reads forward through the file in chunks; every read is bounded by the file's size. */
class Cursor {
  private chunk = new Uint8Array(0);
  private chunkStart = 0;
  pos = 0;
  constructor(
    private readonly handle: FileHandle,
    private readonly size: number,
    private readonly path: string,
  ) {}
  fail(what: string): TunaError {
    return new TunaError("FILE_FORMAT", `${this.path} is not a valid GGUF file: ${what} (at byte ${this.pos}).`);
  }
  private async take(n: number): Promise<DataView> {
    if (this.pos + n > this.size) throw this.fail(`it ends inside the header (needs ${n} more bytes)`);
    const end = this.chunkStart + this.chunk.length;
    if (this.pos < this.chunkStart || this.pos + n > end) {
      const len = Math.min(Math.max(n, 1 << 20), this.size - this.pos);
      const buf = new Uint8Array(len);
      await readFully(this.handle, buf, this.pos);
      this.chunk = buf;
      this.chunkStart = this.pos;
    }
    const view = new DataView(this.chunk.buffer, this.chunk.byteOffset + (this.pos - this.chunkStart), n);
    this.pos += n;
    return view;
  }
  async u32(): Promise<number> {
    return (await this.take(4)).getUint32(0, true);
  }
  async u64(): Promise<number> {
    const v = (await this.take(8)).getBigUint64(0, true);
    if (v > BigInt(this.size)) throw this.fail(`a count or length of ${v} exceeds the file's ${this.size} bytes`);
    return Number(v);
  }
  async string(): Promise<string> {
    const n = await this.u64();
    const view = await this.take(n);
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(view.buffer, view.byteOffset, n));
    } catch {
      throw this.fail("a string is not valid UTF-8");
    }
  }
  async scalar(kind: GgufScalarKind): Promise<number | bigint | boolean | string> {
    switch (kind) {
      case "uint8":
        return (await this.take(1)).getUint8(0);
      case "int8":
        return (await this.take(1)).getInt8(0);
      case "bool":
        return (await this.take(1)).getUint8(0) !== 0;
      case "uint16":
        return (await this.take(2)).getUint16(0, true);
      case "int16":
        return (await this.take(2)).getInt16(0, true);
      case "uint32":
        return (await this.take(4)).getUint32(0, true);
      case "int32":
        return (await this.take(4)).getInt32(0, true);
      case "float32":
        return shortestFloat32((await this.take(4)).getFloat32(0, true));
      case "float64":
        return (await this.take(8)).getFloat64(0, true);
      case "uint64":
        return (await this.take(8)).getBigUint64(0, true);
      case "int64":
        return (await this.take(8)).getBigInt64(0, true);
      case "string":
        return this.string();
    }
  }
  async kind(): Promise<keyof typeof GGUF_VALUE_TYPES> {
    const code = await this.u32();
    const kind = KIND_BY_CODE.get(code);
    if (kind === undefined) throw this.fail(`unknown value type ${code}`);
    return kind;
  }
}

async function readValue(c: Cursor, kind: keyof typeof GGUF_VALUE_TYPES): Promise<GgufValue> {
  if (kind === "array") {
    const itemKind = await c.kind();
    if (itemKind === "array") throw c.fail("nested arrays are not supported");
    const n = await c.u64();
    const values: (number | bigint | boolean | string)[] = [];
    for (let i = 0; i < n; i++) values.push(await c.scalar(itemKind));
    return { kind: "array", itemKind, values };
  }
  const value = await c.scalar(kind);
  if (kind === "string") return { kind, value: value as string };
  if (kind === "bool") return { kind, value: value as boolean };
  if (kind === "uint64" || kind === "int64") return { kind, value: value as bigint };
  return { kind, value: value as number };
}

/** Opens and parses a GGUF file; FILE_NOT_FOUND when absent, FILE_FORMAT when it is not GGUF or is damaged. */
export async function openGguf(path: string): Promise<GgufFile> {
  const handle = await open(path, "r").catch((e: unknown) => {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new TunaError("FILE_NOT_FOUND", `GGUF file not found: ${path}`);
    throw fsError(path, "open", e);
  });
  try {
    const size = (await handle.stat()).size;
    const c = new Cursor(handle, size, path);
    if (size < 24 || (await c.u32()) !== GGUF_MAGIC) throw new TunaError("FILE_FORMAT", `${path} is not a GGUF file (no "GGUF" magic at its start).`);
    const version = await c.u32();
    if (version !== 2 && version !== 3) throw c.fail(`version ${version} is not supported (tuna reads GGUF versions 2 and 3)`);
    const nTensors = await c.u64();
    const nKv = await c.u64();
    const metadata = new Map<string, GgufValue>();
    for (let i = 0; i < nKv; i++) {
      const key = await c.string();
      if (metadata.has(key)) throw c.fail(`the key ${key} appears twice`);
      metadata.set(key, await readValue(c, await c.kind()));
    }
    const alignValue = metadata.get("general.alignment");
    const alignment = alignValue === undefined ? GGUF_DEFAULT_ALIGNMENT : alignValue.kind === "uint32" ? alignValue.value : 0;
    if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0) throw c.fail("general.alignment is not a power of two u32");
    const tensors: GgufTensorInfo[] = [];
    const names = new Set<string>();
    for (let i = 0; i < nTensors; i++) {
      const name = await c.string();
      if (names.has(name)) throw c.fail(`the tensor ${name} appears twice`);
      names.add(name);
      const nDims = await c.u32();
      if (nDims < 1 || nDims > 4) throw c.fail(`tensor ${name} has ${nDims} dimensions (ggml allows 1 to 4)`);
      const ne: number[] = [];
      for (let d = 0; d < nDims; d++) ne.push(await c.u64());
      const code = await c.u32();
      const type = ggmlTypeName(code);
      if (type === undefined) throw c.fail(`tensor ${name} has ggml type ${code}, which tuna does not read`);
      const offset = await c.u64();
      if (offset % alignment !== 0) throw c.fail(`tensor ${name}'s offset ${offset} is not aligned to ${alignment}`);
      tensors.push({ name, ne, type, offset });
    }
    const dataStart = Math.ceil(c.pos / alignment) * alignment;
    const byName = new Map(tensors.map((t) => [t.name, t]));
    for (const t of tensors) {
      let bytes: number;
      try {
        bytes = ggmlTensorBytes(t.type, t.ne);
      } catch {
        throw c.fail(`tensor ${t.name}: a ${t.type} row of ${t.ne[0]} values is not whole blocks`);
      }
      if (dataStart + t.offset + bytes > size) throw c.fail(`tensor ${t.name} (${bytes} bytes at ${t.offset}) runs past the end of the file`);
    }
    return {
      path,
      version,
      metadata,
      tensors,
      dataStart,
      alignment,
      async readTensor(name) {
        const t = byName.get(name);
        if (t === undefined) throw new TunaError("MODEL_INVALID", `${path} has no tensor ${name}.`);
        const out = new Uint8Array(ggmlTensorBytes(t.type, t.ne));
        await readFully(handle, out, dataStart + t.offset);
        return out;
      },
      close: () => handle.close(),
    };
  } catch (e) {
    await handle.close();
    throw e;
  }
}

/** Typed access to metadata values, with the key named in the error when one is missing or of another type. */
export function metadataReader(file: Pick<GgufFile, "path" | "metadata">): {
  num(key: string): number;
  optNum(key: string): number | undefined;
  str(key: string): string;
  optStr(key: string): string | undefined;
  optBool(key: string): boolean | undefined;
  array(key: string): (number | bigint | boolean | string)[] | undefined;
} {
  const get = (key: string): GgufValue | undefined => file.metadata.get(key);
  const wrong = (key: string, want: string): TunaError => new TunaError("FILE_FORMAT", `${file.path}: metadata ${key} is missing or is not ${want}.`);
  const optNum = (key: string): number | undefined => {
    const v = get(key);
    if (v === undefined) return undefined;
    if (v.kind === "uint64" || v.kind === "int64") return Number(v.value);
    if (typeof (v as { value?: unknown }).value === "number") return (v as { value: number }).value;
    throw wrong(key, "a number");
  };
  const optStr = (key: string): string | undefined => {
    const v = get(key);
    if (v === undefined) return undefined;
    if (v.kind !== "string") throw wrong(key, "a string");
    return v.value;
  };
  return {
    optNum,
    num(key) {
      const v = optNum(key);
      if (v === undefined) throw wrong(key, "a number");
      return v;
    },
    optStr,
    str(key) {
      const v = optStr(key);
      if (v === undefined) throw wrong(key, "a string");
      return v;
    },
    optBool(key) {
      const v = get(key);
      if (v === undefined) return undefined;
      if (v.kind !== "bool") throw wrong(key, "a bool");
      return v.value;
    },
    array(key) {
      const v = get(key);
      if (v === undefined) return undefined;
      if (v.kind !== "array") throw wrong(key, "an array");
      return v.values;
    },
  };
}
