import { test } from "node:test";
import assert from "node:assert/strict";
import { crc32c, maskCrc32c, maskedCrc32c } from "../../../src/train/logging/crc32c.ts";
import { createRng } from "../../../src/util/random.ts";
import { crc32cBitwise, hex, maskBitwise } from "./tfevents-reader.ts";

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);

test("crc32c matches the published check value and the iSCSI (RFC 3720) vectors", () => {
  assert.equal(crc32c(ascii("123456789")), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(0)), 0);
  // RFC 3720 B.4, as used by leveldb's crc32c tests.
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c);
});

test("crc32c agrees with a bit-by-bit CRC on random data of many lengths", () => {
  const rng = createRng(7);
  for (let n = 0; n < 300; n += 7) {
    const data = Uint8Array.from({ length: n }, () => Math.floor(rng.uniform() * 256));
    assert.equal(crc32c(data), crc32cBitwise(data), `length ${n}`);
  }
});

test("the TFRecord mask rotates right by 15 and adds 0xA282EAD8 modulo 2^32", () => {
  assert.equal(maskCrc32c(0), 0xa282ead8);
  assert.equal(maskCrc32c(1), 0xa284ead8); // 1 rotated right by 15 = 1 << 17
  assert.equal(maskCrc32c(0x8000), 0xa282ead9); // bit 15 rotates to bit 0
  assert.equal(maskCrc32c(0xffffffff), 0xa282ead7); // wraps around 2^32
  const rng = createRng(3);
  for (let i = 0; i < 100; i++) {
    const crc = Math.floor(rng.uniform() * 2 ** 32);
    assert.equal(maskCrc32c(crc), maskBitwise(crc));
  }
});

test("masked CRC of a record's length field matches the spec's worked example", () => {
  // specs/tensorboard.md section 5: length 32 -> masked crc bytes 29 ed a9 50 (little-endian).
  assert.equal(maskedCrc32c(hex("20 00 00 00 00 00 00 00")), 0x50a9ed29);
  assert.equal(maskedCrc32c(hex("18 00 00 00 00 00 00 00")), 0x224b7fa3);
});
