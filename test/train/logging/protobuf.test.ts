import { test } from "node:test";
import assert from "node:assert/strict";
import { bytesField, concatBytes, doubleField, encodeVarint, floatField, stringField, varintField } from "../../../src/train/logging/protobuf.ts";
import { isTunaError } from "../../../src/util/errors.ts";
import { hex } from "./tfevents-reader.ts";

test("varints: 7 bits a byte, low group first, continuation bit on all but the last", () => {
  const cases: [number | bigint, string][] = [
    [0, "00"],
    [1, "01"],
    [127, "7f"],
    [128, "80 01"],
    [300, "ac 02"],
    [16383, "ff 7f"],
    [16384, "80 80 01"],
    [2 ** 32, "80 80 80 80 10"],
    [Number.MAX_SAFE_INTEGER, "ff ff ff ff ff ff ff 0f"],
    [2n ** 63n, "80 80 80 80 80 80 80 80 80 01"],
    [2n ** 64n - 1n, "ff ff ff ff ff ff ff ff ff 01"],
  ];
  for (const [value, bytes] of cases) assert.deepEqual(encodeVarint(value), hex(bytes), String(value));
});

test("negative varints are 64-bit two's complement, 10 bytes", () => {
  assert.deepEqual(encodeVarint(-1), hex("ff ff ff ff ff ff ff ff ff 01"));
  assert.deepEqual(encodeVarint(-2), hex("fe ff ff ff ff ff ff ff ff 01"));
  assert.deepEqual(encodeVarint(-(2n ** 63n)), hex("80 80 80 80 80 80 80 80 80 01"));
});

test("varints refuse non-integers and values beyond 64 bits", () => {
  for (const bad of [1.5, Number.NaN, 2 ** 53, 2n ** 64n, -(2n ** 63n) - 1n]) {
    assert.throws(() => encodeVarint(bad), (e) => isTunaError(e) && e.code === "INTERNAL", String(bad));
  }
});

test("field encodings: keys, fixed-width little-endian numbers, length prefixes", () => {
  assert.deepEqual(varintField(2, 10), hex("10 0a"));
  assert.deepEqual(varintField(16, 1), hex("80 01 01")); // field 16 needs a two-byte key
  assert.deepEqual(doubleField(1, 1700000000.5), hex("09 00 00 20 40 fc 54 d9 41"));
  assert.deepEqual(floatField(2, 1.25), hex("15 00 00 a0 3f"));
  assert.deepEqual(floatField(2, 0), hex("15 00 00 00 00"));
  assert.deepEqual(stringField(1, ""), hex("0a 00"));
  assert.deepEqual(stringField(3, "é"), hex("1a 02 c3 a9"));
  const long = new Uint8Array(200);
  assert.deepEqual(bytesField(5, long).subarray(0, 3), hex("2a c8 01"));
  assert.equal(bytesField(5, long).length, 203);
  assert.deepEqual(concatBytes([hex("01"), new Uint8Array(0), hex("02 03")]), hex("01 02 03"));
});
