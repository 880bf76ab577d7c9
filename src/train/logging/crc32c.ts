// CRC32C (Castagnoli) and TFRecord's masked form, for the checksums around every tfevents record.
// Table-driven and hand-written: 20 lines do not justify a dependency (Node has no built-in CRC32C).

// Reflected polynomial 0x82F63B78, one table entry per byte value.
const TABLE: Uint32Array = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC32C of `bytes`: init 0xFFFFFFFF, final xor 0xFFFFFFFF ("123456789" -> 0xE3069283). */
export function crc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) crc = TABLE[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// TFRecord masks stored CRCs so that a CRC of data that itself contains CRCs stays well distributed.
const MASK_DELTA = 0xa282ead8;

/** TFRecord's mask: rotate right by 15 bits, then add 0xA282EAD8, modulo 2^32. */
export function maskCrc32c(crc: number): number {
  const rotated = ((crc >>> 15) | (crc << 17)) >>> 0;
  return (rotated + MASK_DELTA) >>> 0;
}

export function maskedCrc32c(bytes: Uint8Array): number {
  return maskCrc32c(crc32c(bytes));
}
