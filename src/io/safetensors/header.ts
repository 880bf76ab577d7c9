// The safetensors header as JSON text: parsing it with every check the reference reader makes
// (specs/safetensors.md 1.2), and building it exactly as the reference writer does (1.3).
import { TunaError } from "../../util/errors.ts";
import {
  SAFETENSORS_DTYPES,
  dtypeBits,
  dtypeRank,
  isSafetensorsDtype,
  tensorByteSize,
  type SafetensorsDtype,
} from "./dtypes.ts";
import { findDuplicateJsonKey } from "./json-keys.ts";

/** Reference reader limit (`MAX_HEADER_SIZE`): a larger header is rejected before reading it. */
export const MAX_HEADER_BYTES = 100_000_000;

/** One tensor of a header; begin/end are relative to the start of the data section. */
export interface HeaderEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
}

export interface ParsedHeader {
  metadata: Record<string, string> | undefined;
  /** Sorted by offset. */
  entries: HeaderEntry[];
}

/** A FILE_FORMAT error that names the file, says what is wrong, and what to do. */
export function corruptFile(path: string, what: string, cause?: unknown): TunaError {
  return new TunaError(
    "FILE_FORMAT",
    `${path} is not a valid safetensors file: ${what}. The file is probably truncated or corrupt; ` +
      `re-download it or save it again.`,
    cause === undefined ? undefined : { cause },
  );
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isNonNegativeSafeInteger(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Parses and validates the header bytes (without the 8-byte length and without the data).
 * `dataBytes` is the size of what follows the header in the file, so that a truncated file and a
 * file with trailing bytes are told apart.
 */
export function parseHeader(path: string, headerBytes: Uint8Array, dataBytes: number): ParsedHeader {
  if (headerBytes.length === 0 || headerBytes[0] !== 0x7b /* { */) {
    throw corruptFile(path, "the JSON header does not start with '{'");
  }
  let text: string;
  try {
    // ignoreBOM keeps a byte-order mark in the text, so it fails the JSON parse as it does in Rust.
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch (e) {
    throw corruptFile(path, "the header is not valid UTF-8", e);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw corruptFile(path, `the header is not valid JSON (${(e as Error).message})`, e);
  }
  if (!isPlainObject(json)) throw corruptFile(path, "the header is not a JSON object");
  // JSON.parse keeps only the last of two equal keys, which would hide a duplicated tensor.
  const duplicate = findDuplicateJsonKey(text);
  if (duplicate !== undefined) {
    const where = duplicate.parent === undefined ? "the header" : `the entry "${duplicate.parent}"`;
    throw corruptFile(path, `the key "${duplicate.key}" appears twice in ${where}`);
  }

  let metadata: Record<string, string> | undefined;
  const entries: HeaderEntry[] = [];
  for (const [name, value] of Object.entries(json)) {
    if (name === "__metadata__") {
      metadata = parseMetadata(path, value);
    } else {
      entries.push(parseEntry(path, name, value));
    }
  }

  entries.sort((a, b) => a.begin - b.begin || a.end - b.end || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  let previous: HeaderEntry | undefined;
  for (const entry of entries) {
    const expected = previous?.end ?? 0;
    if (entry.begin !== expected) {
      const after = previous === undefined ? "the data section starts at 0" : `the previous tensor "${previous.name}" ends at ${expected}`;
      const kind = entry.begin > expected ? `a hole of ${entry.begin - expected} bytes` : `an overlap of ${expected - entry.begin} bytes`;
      throw corruptFile(path, `tensor "${entry.name}" starts at data offset ${entry.begin} but ${after} (${kind})`);
    }
    previous = entry;
  }
  const dataEnd = previous?.end ?? 0;
  if (dataEnd > dataBytes) {
    throw corruptFile(
      path,
      `the header describes ${dataEnd} bytes of tensor data but only ${dataBytes} follow the header ` +
        `(the file is truncated by ${dataEnd - dataBytes} bytes)`,
    );
  }
  if (dataEnd < dataBytes) {
    throw corruptFile(
      path,
      `${dataBytes - dataEnd} trailing bytes follow the last tensor (the header describes ${dataEnd} ` +
        `bytes of tensor data, the file holds ${dataBytes})`,
    );
  }
  return { metadata, entries };
}

function parseMetadata(path: string, value: unknown): Record<string, string> {
  if (!isPlainObject(value)) throw corruptFile(path, `"__metadata__" is not an object of strings`);
  const out: [string, string][] = [];
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== "string") {
      throw corruptFile(path, `"__metadata__"."${k}" is ${JSON.stringify(v)}, but metadata values must be strings`);
    }
    out.push([k, v]);
  }
  // fromEntries defines own properties, so even a "__proto__" key is kept as data.
  return Object.fromEntries(out);
}

function parseEntry(path: string, name: string, value: unknown): HeaderEntry {
  const where = `tensor "${name}"`;
  if (!isPlainObject(value)) throw corruptFile(path, `${where} is not an object with dtype, shape and data_offsets`);
  const { dtype, shape, data_offsets: offsets } = value;
  if (typeof dtype !== "string" || !isSafetensorsDtype(dtype)) {
    throw corruptFile(
      path,
      `${where} has the unknown dtype ${JSON.stringify(dtype)} (known: ${SAFETENSORS_DTYPES.join(", ")}); ` +
        `if the file comes from a newer safetensors version, tuna does not support it yet`,
    );
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegativeSafeInteger)) {
    throw corruptFile(path, `${where} has the shape ${JSON.stringify(shape)}, not an array of non-negative integers`);
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !isNonNegativeSafeInteger(offsets[0]) ||
    !isNonNegativeSafeInteger(offsets[1]) ||
    offsets[0] > offsets[1]
  ) {
    throw corruptFile(path, `${where} has data_offsets ${JSON.stringify(offsets)}, not [begin, end] with 0 <= begin <= end`);
  }
  const begin = offsets[0];
  const end = offsets[1];
  const size = tensorByteSize(dtype, shape);
  if (size === undefined) {
    throw corruptFile(path, `${where} (${dtype}, shape [${shape.join(", ")}]) is not a whole number of bytes (${dtypeBits(dtype)} bits per element)`);
  }
  if (size !== BigInt(end - begin)) {
    throw corruptFile(
      path,
      `${where} (${dtype}, shape [${shape.join(", ")}]) needs ${size} bytes but its data_offsets [${begin}, ${end}] span ${end - begin}`,
    );
  }
  return { name, dtype, shape, begin, end };
}

/** The writer's tensor order: dtype descending in enum order, then name by UTF-8 bytes (as Rust's String order). */
export function compareForWriting(
  a: { name: string; dtype: SafetensorsDtype },
  b: { name: string; dtype: SafetensorsDtype },
): number {
  const byDtype = dtypeRank(b.dtype) - dtypeRank(a.dtype);
  if (byDtype !== 0) return byDtype;
  return Buffer.compare(Buffer.from(a.name, "utf8"), Buffer.from(b.name, "utf8"));
}

/**
 * The header bytes as the reference writer produces them: compact JSON (serde_json escapes strings
 * as JSON.stringify does), `__metadata__` first, entries in the given order with keys
 * dtype/shape/data_offsets, then spaces up to a multiple of 8 bytes.
 */
export function buildHeader(entries: readonly HeaderEntry[], metadata: Record<string, string> | undefined): Uint8Array {
  const parts: string[] = [];
  if (metadata !== undefined) parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  for (const e of entries) {
    parts.push(`${JSON.stringify(e.name)}:{"dtype":"${e.dtype}","shape":[${e.shape.join(",")}],"data_offsets":[${e.begin},${e.end}]}`);
  }
  const json = Buffer.from(`{${parts.join(",")}}`, "utf8");
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(padded).fill(0x20);
  out.set(json, 0);
  return out;
}
