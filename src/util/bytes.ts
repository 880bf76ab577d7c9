// The bytes under a typed array or Buffer, as a Uint8Array view of the same memory (no copy).
export function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}
