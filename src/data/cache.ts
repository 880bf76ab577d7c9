// The prepared-data cache: packed sequences, split stats and metadata of one split in one binary file
// named by the dataset fingerprint; a stale, foreign or damaged file is a cache miss, never a failure.
import { createHash, randomBytes } from "node:crypto";
import { endianness } from "node:os";
import { mkdir, open, rename, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { TunaError, errorMessage, isTunaError } from "../util/errors.ts";
import type { PackedSequence, SplitStats } from "./types.ts";
import { bytesOf } from "../util/bytes.ts";

/**
 * File layout: "TUNADATA" magic, u32 LE header length, the JSON header (format version, fingerprint,
 * stats, meta, blob table, SHA-256 of the blobs), zero padding to 8 bytes, then the blobs back to back,
 * each 8-byte aligned. Bump FORMAT_VERSION on any change: older files then read as misses.
 */
export const PREPARED_CACHE_FORMAT_VERSION = 1;
const MAGIC = "TUNADATA";
const PREAMBLE_BYTES = 12;
const MAX_HEADER_BYTES = 1 << 28;
const WRITE_BUFFER_BYTES = 1 << 22;
const READ_PIECE_BYTES = 1 << 30;

export interface PreparedData {
  sequences: PackedSequence[];
  stats: SplitStats;
  /** Anything JSON can hold (tokenizer name, template, options, for display). */
  meta: unknown;
}

export type PreparedCacheRead =
  | { hit: true; data: PreparedData; path: string }
  /** `notice` is set when a cache file existed but could not be used; the caller shows it. */
  | { hit: false; path: string; notice?: string };

type BlobName = "sequenceLengths" | "docCounts" | "docLengths" | "rowCounts" | "rows" | "inputIds" | "trained";
const BLOB_NAMES: readonly BlobName[] = ["sequenceLengths", "docCounts", "docLengths", "rowCounts", "rows", "inputIds", "trained"];

interface BlobEntry {
  name: BlobName;
  dtype: "int32" | "uint8";
  count: number;
  offset: number;
}

interface Header {
  version: number;
  endianness: string;
  fingerprint: string;
  sequences: number;
  stats: SplitStats;
  meta: unknown;
  blobs: BlobEntry[];
  sha256: string;
}

function checkFingerprint(fingerprint: string): void {
  if (!/^[0-9a-f]{16,128}$/.test(fingerprint)) {
    throw new TunaError("INTERNAL", `prepared-data cache: fingerprint "${fingerprint}" is not a lowercase hex digest`);
  }
}

/** Where the cache of a fingerprint lives. */
export function preparedCachePath(dir: string, fingerprint: string): string {
  checkFingerprint(fingerprint);
  return join(dir, `${fingerprint}.tunadata`);
}

const align8 = (n: number): number => Math.ceil(n / 8) * 8;

/** Each blob as a list of byte views, so it can be hashed and written without concatenating everything. */
function blobPieces(name: BlobName, sequences: readonly PackedSequence[]): Uint8Array[] {
  const perSequence = (f: (s: PackedSequence) => number): Uint8Array[] => [bytesOf(Int32Array.from(sequences, f))];
  switch (name) {
    case "sequenceLengths":
      return perSequence((s) => s.inputIds.length);
    case "docCounts":
      return perSequence((s) => s.docLengths.length);
    case "rowCounts":
      return perSequence((s) => s.rows.length);
    case "docLengths":
      return [bytesOf(Int32Array.from(sequences.flatMap((s) => s.docLengths)))];
    case "rows":
      return [bytesOf(Int32Array.from(sequences.flatMap((s) => s.rows)))];
    case "inputIds":
      return sequences.map((s) => bytesOf(s.inputIds));
    case "trained":
      return sequences.map((s) => bytesOf(s.trained));
  }
}

/** Writes the cache to a temporary name and renames it into place, so a reader never sees half a file. */
export async function writePreparedCache(dir: string, fingerprint: string, data: PreparedData): Promise<string> {
  const path = preparedCachePath(dir, fingerprint);
  const pieces = BLOB_NAMES.map((name) => blobPieces(name, data.sequences));
  const hash = createHash("sha256");
  const blobs: BlobEntry[] = [];
  let offset = 0; // relative to the first blob
  BLOB_NAMES.forEach((name, b) => {
    let bytes = 0;
    for (const p of pieces[b]!) {
      hash.update(p);
      bytes += p.byteLength;
    }
    const dtype = name === "trained" ? "uint8" : "int32";
    blobs.push({ name, dtype, count: dtype === "int32" ? bytes / 4 : bytes, offset });
    offset = align8(offset + bytes);
  });
  const header: Header = {
    version: PREPARED_CACHE_FORMAT_VERSION,
    endianness: endianness(),
    fingerprint,
    sequences: data.sequences.length,
    stats: data.stats,
    meta: data.meta,
    blobs,
    sha256: hash.digest("hex"),
  };
  const headerBytes = Buffer.from(JSON.stringify(header, boxNonFinite), "utf8");
  const preamble = Buffer.alloc(PREAMBLE_BYTES);
  preamble.write(MAGIC, 0, "latin1");
  preamble.writeUInt32LE(headerBytes.length, 8);
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  let fh: FileHandle | undefined;
  try {
    await mkdir(dir, { recursive: true });
    fh = await open(tmp, "w");
    const out = bufferedWriter(fh);
    await out.write(preamble);
    await out.write(headerBytes);
    await out.pad(align8(PREAMBLE_BYTES + headerBytes.length) - PREAMBLE_BYTES - headerBytes.length);
    for (const [b, blob] of blobs.entries()) {
      let bytes = 0;
      for (const p of pieces[b]!) {
        await out.write(p);
        bytes += p.byteLength;
      }
      await out.pad((blobs[b + 1]?.offset ?? align8(blob.offset + bytes)) - blob.offset - bytes);
    }
    await out.flush();
    await fh.datasync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
  } catch (e) {
    await fh?.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw new TunaError("IO", `cannot write the prepared-data cache ${path}: ${errorMessage(e)}; check the cache folder's space and permissions`, { cause: e });
  }
  return path;
}

function bufferedWriter(fh: FileHandle): { write(p: Uint8Array): Promise<void>; pad(n: number): Promise<void>; flush(): Promise<void> } {
  const buffer = Buffer.alloc(WRITE_BUFFER_BYTES);
  let used = 0;
  const flush = async (): Promise<void> => {
    if (used > 0) await fh.write(buffer, 0, used);
    used = 0;
  };
  const write = async (p: Uint8Array): Promise<void> => {
    if (p.byteLength > WRITE_BUFFER_BYTES / 2) {
      await flush();
      await fh.write(p);
      return;
    }
    if (used + p.byteLength > WRITE_BUFFER_BYTES) await flush();
    buffer.set(p, used);
    used += p.byteLength;
  };
  return { write, pad: (n) => write(new Uint8Array(n)), flush };
}

// JSON has no NaN or Infinity (an empty split's packing efficiency is 0/0): box them so they survive.
function boxNonFinite(_key: string, value: unknown): unknown {
  return typeof value === "number" && !Number.isFinite(value) ? { $number: String(value) } : value;
}

function unboxNonFinite(_key: string, value: unknown): unknown {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return value;
  const keys = Object.keys(value);
  const boxed = (value as { $number?: unknown }).$number;
  return keys.length === 1 && typeof boxed === "string" ? Number(boxed) : value;
}

/** Why a cache file cannot be used; readPreparedCache turns it into a miss with a notice. */
const unusable = (why: string): TunaError => new TunaError("FILE_FORMAT", why);

async function readExactly(fh: FileHandle, target: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < target.byteLength; ) {
    const length = Math.min(READ_PIECE_BYTES, target.byteLength - done);
    const { bytesRead } = await fh.read(target, done, length, position + done);
    if (bytesRead === 0) throw unusable(`the file ends early (truncated at byte ${position + done})`);
    done += bytesRead;
  }
}

function isStats(v: unknown): v is SplitStats {
  if (typeof v !== "object" || v === null) return false;
  const s = v as Record<string, unknown>;
  const numbers = ["rows", "dropped", "truncated", "tokens", "trainedTokens", "sequences", "packingEfficiency"];
  return typeof s["split"] === "string" && numbers.every((k) => typeof s[k] === "number");
}

function parseHeader(text: string, fingerprint: string): Header {
  let h: unknown;
  try {
    h = JSON.parse(text, unboxNonFinite);
  } catch (e) {
    throw unusable(`its header is not valid JSON (${errorMessage(e)})`);
  }
  if (typeof h !== "object" || h === null) throw unusable("its header is not an object");
  const header = h as Partial<Header>;
  if (header.version !== PREPARED_CACHE_FORMAT_VERSION) {
    throw unusable(`it was written in cache format version ${String(header.version)} and this tuna reads version ${PREPARED_CACHE_FORMAT_VERSION}`);
  }
  if (header.endianness !== endianness()) throw unusable(`it was written on a ${String(header.endianness)} machine`);
  if (header.fingerprint !== fingerprint) throw unusable(`it holds fingerprint ${String(header.fingerprint)}, not ${fingerprint}`);
  if (!Number.isInteger(header.sequences) || !isStats(header.stats) || typeof header.sha256 !== "string" || !Array.isArray(header.blobs)) {
    throw unusable("its header lacks sequences, stats, blobs or sha256");
  }
  const blobs = header.blobs as unknown[];
  BLOB_NAMES.forEach((name, b) => {
    const blob = blobs[b] as Partial<BlobEntry> | undefined;
    const dtype = name === "trained" ? "uint8" : "int32";
    if (blob?.name !== name || blob.dtype !== dtype || !Number.isSafeInteger(blob.count) || !Number.isSafeInteger(blob.offset) || blob.count! < 0) {
      throw unusable(`its blob table entry ${b} is not the expected ${name} (${dtype})`);
    }
  });
  return header as Header;
}

function sumOf(a: Int32Array, from = 0, to = a.length): number {
  let s = 0;
  for (let i = from; i < to; i++) s += a[i]!;
  return s;
}

/** Rebuilds the sequences (views into the blobs) after checking that the blobs agree with each other. */
function sequencesFromBlobs(header: Header, blobs: Map<BlobName, Int32Array | Uint8Array>): PackedSequence[] {
  const int = (name: BlobName): Int32Array => blobs.get(name) as Int32Array;
  const lengths = int("sequenceLengths");
  const docCounts = int("docCounts");
  const docLengths = int("docLengths");
  const rowCounts = int("rowCounts");
  const rows = int("rows");
  const inputIds = int("inputIds");
  const trained = blobs.get("trained") as Uint8Array;
  const n = header.sequences;
  if (lengths.length !== n || docCounts.length !== n || rowCounts.length !== n) throw unusable("its per-sequence tables do not have one entry per sequence");
  if (sumOf(lengths) !== inputIds.length || trained.length !== inputIds.length) throw unusable("its sequence lengths do not add up to its token count");
  if (sumOf(docCounts) !== docLengths.length || sumOf(rowCounts) !== rows.length) throw unusable("its document or row counts do not match their tables");
  const out: PackedSequence[] = [];
  let token = 0;
  let doc = 0;
  let row = 0;
  for (let i = 0; i < n; i++) {
    const length = lengths[i]!;
    const docs = docCounts[i]!;
    if (length < 0 || docs < 0 || rowCounts[i]! < 0 || sumOf(docLengths, doc, doc + docs) !== length) {
      throw unusable(`sequence ${i}'s document lengths do not add up to its length`);
    }
    out.push({
      inputIds: inputIds.subarray(token, token + length),
      trained: trained.subarray(token, token + length),
      docLengths: Array.from(docLengths.subarray(doc, doc + docs)),
      rows: Array.from(rows.subarray(row, row + rowCounts[i]!)),
    });
    token += length;
    doc += docs;
    row += rowCounts[i]!;
  }
  return out;
}

async function readCacheFile(fh: FileHandle, fingerprint: string): Promise<PreparedData> {
  const { size } = await fh.stat();
  const preamble = new Uint8Array(PREAMBLE_BYTES);
  await readExactly(fh, preamble, 0);
  const view = Buffer.from(preamble.buffer);
  if (view.toString("latin1", 0, 8) !== MAGIC) throw unusable("it is not a tuna prepared-data file (bad magic)");
  const headerLength = view.readUInt32LE(8);
  if (headerLength > MAX_HEADER_BYTES || PREAMBLE_BYTES + headerLength > size) throw unusable(`its header length ${headerLength} does not fit the file`);
  const headerBytes = new Uint8Array(headerLength);
  await readExactly(fh, headerBytes, PREAMBLE_BYTES);
  const header = parseHeader(Buffer.from(headerBytes.buffer).toString("utf8"), fingerprint);
  const base = align8(PREAMBLE_BYTES + headerLength);
  const last = header.blobs[header.blobs.length - 1]!;
  const end = base + align8(last.offset + last.count * (last.dtype === "int32" ? 4 : 1));
  if (end !== size) throw unusable(`it is ${size} bytes but its header describes ${end}`);
  const hash = createHash("sha256");
  const blobs = new Map<BlobName, Int32Array | Uint8Array>();
  for (const blob of header.blobs) {
    const data = blob.dtype === "int32" ? new Int32Array(blob.count) : new Uint8Array(blob.count);
    const bytes = bytesOf(data);
    if (base + blob.offset + bytes.byteLength > size) throw unusable(`its ${blob.name} blob runs past the end of the file`);
    await readExactly(fh, bytes, base + blob.offset);
    hash.update(bytes);
    blobs.set(blob.name, data);
  }
  if (hash.digest("hex") !== header.sha256) throw unusable("its contents do not match their checksum (the file is damaged)");
  return { sequences: sequencesFromBlobs(header, blobs), stats: header.stats, meta: header.meta };
}

/** Reads the cache of a fingerprint: a hit, a plain miss (no file), or a miss with a notice saying why the file was not used. */
export async function readPreparedCache(dir: string, fingerprint: string): Promise<PreparedCacheRead> {
  const path = preparedCachePath(dir, fingerprint);
  let fh: FileHandle;
  try {
    fh = await open(path, "r");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return { hit: false, path };
    return { hit: false, path, notice: `cannot open the prepared-data cache ${path} (${errorMessage(e)}); preparing the data again` };
  }
  try {
    return { hit: true, path, data: await readCacheFile(fh, fingerprint) };
  } catch (e) {
    const why = isTunaError(e) ? e.message : `reading it failed (${errorMessage(e)})`;
    return { hit: false, path, notice: `not using the prepared-data cache ${path}: ${why}; preparing the data again` };
  } finally {
    await fh.close().catch(() => undefined);
  }
}
