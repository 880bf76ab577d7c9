// The dataset fingerprint that names a prepared-data cache: SHA-256 over the contents of every input file
// and every option that changes the output, with per-file content hashes remembered in a small sidecar.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readFile, rename, stat, unlink, writeFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { TunaError, errorMessage } from "../util/errors.ts";

export interface FingerprintFile {
  path: string;
  [key: string]: unknown;
}

export interface FingerprintOptions {
  /**
   * A JSON file remembering each file's content hash by path, size and mtime, so that a re-run does not
   * re-read gigabytes of data (the data stage keeps it in its cache folder). Without it, every file is read.
   */
  hashCacheFile?: string;
}

// Bumped whenever what goes into the hash changes, so old caches stop matching.
const FINGERPRINT_SCHEME = "tuna-dataset-fingerprint-v1";
const SIDECAR_VERSION = 2;
// A file modified this close to when it was hashed may change again within the same mtime tick (coarse
// timestamps on some file systems): its hash is not remembered, so the next run reads it again.
const RACY_MS = 2000;

// A file is known unchanged when size, mtime, ctime and inode all match. mtime alone is not enough: an
// in-place edit of the same size with the old mtime restored (touch -d, utimes) would serve stale data,
// but it still moves ctime, which no user call can set back.
interface SidecarEntry {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  sha256: string;
}

type Sidecar = Map<string, SidecarEntry>;

/** Deterministic JSON: object keys sorted, undefined members skipped; values JSON cannot hold are refused. */
function canonicalJson(value: unknown, where: string): string {
  if (value === undefined) return "null"; // only reached inside arrays, as JSON.stringify does
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    // JSON would turn NaN and Infinity into null and conflate them with a real null.
    return Number.isFinite(value) ? JSON.stringify(value) : JSON.stringify({ $number: String(value) });
  }
  if (typeof value === "bigint") return JSON.stringify({ $bigint: value.toString() });
  if (Array.isArray(value)) return `[${value.map((v, i) => canonicalJson(v, `${where}[${i}]`)).join(",")}]`;
  if (ArrayBuffer.isView(value)) {
    const bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    return JSON.stringify({ $bytes: createHash("sha256").update(bytes).digest("hex"), type: value.constructor.name });
  }
  if (typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    const obj = value as Record<string, unknown>;
    const members = Object.keys(obj)
      .sort()
      .filter((k) => obj[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k], `${where}.${k}`)}`);
    return `{${members.join(",")}}`;
  }
  const kind = typeof value === "object" ? Object.prototype.toString.call(value) : typeof value;
  throw new TunaError("INTERNAL", `dataset fingerprint: ${where} is a ${kind}; only JSON-like values (and typed arrays) can be fingerprinted`);
}

async function readSidecar(path: string | undefined): Promise<Sidecar> {
  const out: Sidecar = new Map();
  if (path === undefined) return out;
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, "utf8"));
  } catch {
    return out; // missing or unreadable: it is only a cache
  }
  if (typeof parsed !== "object" || parsed === null) return out;
  const { version, files } = parsed as { version?: unknown; files?: unknown };
  if (version !== SIDECAR_VERSION || typeof files !== "object" || files === null) return out;
  for (const [file, entry] of Object.entries(files as Record<string, unknown>)) {
    const e = entry as Partial<SidecarEntry> | null;
    const numbers = e !== null && [e.size, e.mtimeMs, e.ctimeMs, e.ino].every((v) => typeof v === "number");
    if (e !== null && numbers && typeof e.sha256 === "string" && /^[0-9a-f]{64}$/.test(e.sha256)) {
      out.set(file, { size: e.size!, mtimeMs: e.mtimeMs!, ctimeMs: e.ctimeMs!, ino: e.ino!, sha256: e.sha256 });
    }
  }
  return out;
}

async function writeSidecar(path: string, sidecar: Sidecar): Promise<void> {
  const files: Record<string, SidecarEntry> = {};
  for (const [file, entry] of [...sidecar].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) files[file] = entry;
  const tmp = `${path}.tmp-${process.pid}-${Math.floor(Math.random() * 1e9)}`;
  try {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(tmp, `${JSON.stringify({ version: SIDECAR_VERSION, files }, null, 1)}\n`);
    await rename(tmp, path);
  } catch {
    // Not being able to remember hashes only costs time on the next run.
    await unlink(tmp).catch(() => undefined);
  }
}

async function hashFileContents(path: string): Promise<string> {
  const hash = createHash("sha256");
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  } catch (e) {
    throw new TunaError("IO", `cannot read ${path} to fingerprint the dataset: ${errorMessage(e)}`, { cause: e });
  }
  return hash.digest("hex");
}

type FileStamp = Omit<SidecarEntry, "sha256">;

const sameStamp = (a: FileStamp, b: FileStamp): boolean => a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs && a.ino === b.ino;

async function statFile(path: string): Promise<FileStamp> {
  try {
    const s = await stat(path);
    if (!s.isFile()) throw new TunaError("FILE_FORMAT", `dataset fingerprint: ${path} is not a regular file`);
    return { size: s.size, mtimeMs: s.mtimeMs, ctimeMs: s.ctimeMs, ino: s.ino };
  } catch (e) {
    if (e instanceof TunaError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new TunaError(code === "ENOENT" ? "FILE_NOT_FOUND" : "IO", `cannot read ${path} to fingerprint the dataset: ${errorMessage(e)}`, { cause: e });
  }
}

/** The SHA-256 of one file's contents, from the sidecar when its size, mtime, ctime and inode are unchanged. */
async function fileContentHash(path: string, sidecar: Sidecar): Promise<{ sha256: string; changed: boolean }> {
  const key = resolve(path);
  const before = await statFile(path);
  const known = sidecar.get(key);
  if (known !== undefined && sameStamp(known, before)) return { sha256: known.sha256, changed: false };
  const hashedAtMs = Date.now();
  const sha256 = await hashFileContents(path);
  const after = await statFile(path);
  const stable = sameStamp(after, before) && before.mtimeMs < hashedAtMs - RACY_MS;
  if (stable) sidecar.set(key, { ...before, sha256 });
  else sidecar.delete(key);
  return { sha256, changed: true };
}

/**
 * The fingerprint of a prepared dataset: SHA-256 (hex) over the contents of `parts.files` (data files,
 * tokenizer files; each entry keeps its path and any other member) and every other member of `parts`
 * (template text, max length, packing options...), key order irrelevant. File order matters: it is row order.
 */
export async function datasetFingerprint(parts: Record<string, unknown> & { files: FingerprintFile[] }, options: FingerprintOptions = {}): Promise<string> {
  const sidecar = await readSidecar(options.hashCacheFile);
  let sidecarChanged = false;
  const files: Record<string, unknown>[] = [];
  for (const file of parts.files) {
    const { sha256, changed } = await fileContentHash(file.path, sidecar);
    sidecarChanged ||= changed;
    files.push({ ...file, sha256 });
  }
  if (options.hashCacheFile !== undefined && sidecarChanged) await writeSidecar(options.hashCacheFile, sidecar);
  const text = canonicalJson({ scheme: FINGERPRINT_SCHEME, parts: { ...parts, files } }, "fingerprint");
  return createHash("sha256").update(text).digest("hex");
}
