// Strict UTF-8 for dataset text files: where the first invalid byte is, and the error that names file, line
// and byte offset. Node's own decoding replaces bad bytes with U+FFFD without a word, which trains on noise.
import { isUtf8 } from "node:buffer";
import { TunaError } from "../../util/errors.ts";

/** Index of the first byte that is not part of a valid UTF-8 sequence, or -1 when all are valid. */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  if (isUtf8(bytes)) return -1;
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i]!;
    // Sequence length and the allowed range of the second byte (no overlongs, surrogates or > U+10FFFF).
    let n: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b < 0x80) n = 1;
    else if (b >= 0xc2 && b <= 0xdf) n = 2;
    else if (b >= 0xe0 && b <= 0xef) [n, lo, hi] = [3, b === 0xe0 ? 0xa0 : 0x80, b === 0xed ? 0x9f : 0xbf];
    else if (b >= 0xf0 && b <= 0xf4) [n, lo, hi] = [4, b === 0xf0 ? 0x90 : 0x80, b === 0xf4 ? 0x8f : 0xbf];
    else return i;
    for (let k = 1; k < n; k++) {
      const c = bytes[i + k];
      if (c === undefined || c < (k === 1 ? lo : 0x80) || c > (k === 1 ? hi : 0xbf)) return i;
    }
    i += n;
  }
  return -1;
}

/** FILE_FORMAT for invalid UTF-8 at `byteOffset` of the file (line is 1-based). */
export function invalidUtf8Error(display: string, line: number, byteOffset: number, byte: number): TunaError {
  return new TunaError(
    "FILE_FORMAT",
    `${display}:${line}: invalid UTF-8 at byte offset ${byteOffset} (byte 0x${byte.toString(16).padStart(2, "0")}); dataset ` +
      `text files must be UTF-8. Convert the file (e.g. iconv -f latin1 -t utf-8), or let tuna skip malformed rows ` +
      `(JSON Lines only: such lines are then skipped and counted).`,
  );
}

/** The whole file as text, or the invalid-UTF-8 error naming the line and byte offset. BOM removed. */
export function decodeUtf8File(bytes: Buffer, display: string): string {
  const bad = firstInvalidUtf8(bytes);
  if (bad >= 0) {
    let line = 1;
    for (let i = bytes.indexOf(10); i >= 0 && i < bad; i = bytes.indexOf(10, i + 1)) line++;
    throw invalidUtf8Error(display, line, bad, bytes[bad]!);
  }
  const text = bytes.toString("utf8");
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}
