// The bytes under a typed array or Buffer, as a Uint8Array view of the same memory (no copy).
export function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/** 16-bit elements (bf16 / f16 bit patterns) of little-endian bytes; the rare odd-offset buffer is copied to align it. */
export function uint16sOf(bytes: Uint8Array): Uint16Array {
  const aligned = bytes.byteOffset % 2 === 0 ? bytes : bytes.slice();
  return new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
}
