// Opening a .safetensors file: reads only the 8-byte length and the header, validates them, and
// reads one tensor's bytes at a time with positional reads, so a 16 GB file never sits in memory.
import { open, type FileHandle } from "node:fs/promises";
import { TunaError } from "../../util/errors.ts";
import type { SafetensorsDtype } from "./dtypes.ts";
import { MAX_HEADER_BYTES, corruptFile, parseHeader } from "./header.ts";
import { fsError, readFully } from "./fs-errors.ts";

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute offset of the tensor's first byte in the file. */
  byteOffset: number;
  byteLength: number;
}

export interface SafetensorsFile {
  readonly path: string;
  readonly metadata: Readonly<Record<string, string>> | undefined;
  /** In offset order. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** Reads only this tensor's bytes into a fresh (8-byte aligned) array. */
  readTensor(name: string): Promise<Uint8Array>;
  /** Bytes [start, end) of this tensor only (a rank's share of it), into a fresh (8-byte aligned) array. */
  readTensorRange(name: string, start: number, end: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

export async function openSafetensors(path: string): Promise<SafetensorsFile> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (e) {
    throw fsError(path, "open it for reading", e);
  }
  try {
    const { metadata, tensors } = await readHeader(path, handle);
    return makeFile(path, handle, metadata, tensors);
  } catch (e) {
    await handle.close();
    throw e;
  }
}

async function readHeader(
  path: string,
  handle: FileHandle,
): Promise<{ metadata: Record<string, string> | undefined; tensors: Map<string, TensorInfo> }> {
  const stat = await handle.stat();
  if (!stat.isFile()) throw corruptFile(path, "it is not a regular file");
  const fileSize = stat.size;
  if (fileSize < 8) throw corruptFile(path, `it has ${fileSize} bytes, fewer than the 8-byte header length`);
  const lengthBytes = new Uint8Array(8);
  if ((await readFully(handle, lengthBytes, 0)) < 8) throw corruptFile(path, "the file ended while reading the header length");
  const headerLength = new DataView(lengthBytes.buffer).getBigUint64(0, true);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    throw corruptFile(path, `the header length ${headerLength} exceeds the limit of ${MAX_HEADER_BYTES} bytes`);
  }
  const n = Number(headerLength);
  if (8 + n > fileSize) {
    throw corruptFile(path, `the header length ${n} runs past the end of the file (${fileSize} bytes)`);
  }
  const headerBytes = new Uint8Array(n);
  if ((await readFully(handle, headerBytes, 8)) < n) throw corruptFile(path, "the file ended while reading the header");
  const dataStart = 8 + n;
  const parsed = parseHeader(path, headerBytes, fileSize - dataStart);
  const tensors = new Map<string, TensorInfo>();
  for (const e of parsed.entries) {
    tensors.set(e.name, { name: e.name, dtype: e.dtype, shape: e.shape, byteOffset: dataStart + e.begin, byteLength: e.end - e.begin });
  }
  return { metadata: parsed.metadata, tensors };
}

function makeFile(
  path: string,
  handle: FileHandle,
  metadata: Record<string, string> | undefined,
  tensors: Map<string, TensorInfo>,
): SafetensorsFile {
  let closed = false;
  const readRange = async (name: string, start: number, end: number): Promise<Uint8Array> => {
    const info = tensors.get(name);
    if (info === undefined) {
      throw new TunaError(
        "MODEL_INVALID",
        `${path} has no tensor named "${name}" (it holds ${tensors.size} tensors); check the tensor name.`,
      );
    }
    if (closed) throw new TunaError("INTERNAL", `readTensor("${name}") called after ${path} was closed`);
    if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && start <= end && end <= info.byteLength)) {
      throw new TunaError("INTERNAL", `bytes [${start}, ${end}) of "${name}" are not within its ${info.byteLength} bytes`);
    }
    const out = new Uint8Array(end - start);
    let got: number;
    try {
      got = await readFully(handle, out, info.byteOffset + start);
    } catch (e) {
      throw fsError(path, `read tensor "${name}" from`, e);
    }
    if (got < out.length) {
      throw corruptFile(
        path,
        `tensor "${name}" should occupy bytes [${info.byteOffset}, ${info.byteOffset + info.byteLength}) but the file ` +
          `ends at byte ${info.byteOffset + start + got} (it was truncated or replaced after it was opened)`,
      );
    }
    return out;
  };
  return {
    path,
    metadata,
    tensors,
    readTensor: (name: string): Promise<Uint8Array> => readRange(name, 0, tensors.get(name)?.byteLength ?? 0),
    readTensorRange: readRange,
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await handle.close();
    },
  };
}
