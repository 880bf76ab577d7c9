// Tests of the float conversions against values derived by hand from the IEEE formats:
// signed zeros, subnormals, infinities, NaN, extremes and round-to-nearest-even ties.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  bf16BitsToF32,
  f16BitsToF32,
  f32BitsToBf16Bits,
  f32BitsToF16Bits,
  f32ToBf16Bits,
  f32ToF16Bits,
  f8E4M3BitsToF32,
  f8E5M2BitsToF32,
} from "../../src/util/half.ts";

const isF16NaN = (b: number): boolean => (b & 0x7c00) === 0x7c00 && (b & 0x03ff) !== 0;
const isBf16NaN = (b: number): boolean => (b & 0x7f80) === 0x7f80 && (b & 0x007f) !== 0;

// The test's own float32 bit views, for stepping one float32 ulp from an exact midpoint.
const f = new Float32Array(1);
const u = new Uint32Array(f.buffer);
const fromBits = (bits: number): number => {
  u[0] = bits;
  return f[0]!;
};
const bitsOf = (x: number): number => {
  f[0] = x;
  return u[0]!;
};

void test("bf16 bits to float32", () => {
  assert.ok(Object.is(bf16BitsToF32(0x0000), 0));
  assert.ok(Object.is(bf16BitsToF32(0x8000), -0));
  assert.equal(bf16BitsToF32(0x3f80), 1);
  assert.equal(bf16BitsToF32(0xbf80), -1);
  assert.equal(bf16BitsToF32(0x4049), 3.140625); // 0x40490000: 2 * (1 + 0x49/128)
  assert.equal(bf16BitsToF32(0x7f7f), 255 * 2 ** 120); // max: (1 + 127/128) * 2^127
  assert.equal(bf16BitsToF32(0x0080), 2 ** -126); // min normal
  assert.equal(bf16BitsToF32(0x0001), 2 ** -133); // min subnormal: 2^16 * 2^-149
  assert.equal(bf16BitsToF32(0x7f80), Infinity);
  assert.equal(bf16BitsToF32(0xff80), -Infinity);
  assert.ok(Number.isNaN(bf16BitsToF32(0x7fc0)));
  assert.ok(Number.isNaN(bf16BitsToF32(0x7f81)));
});

void test("float32 to bf16 rounds to nearest even and keeps NaN", () => {
  assert.equal(f32ToBf16Bits(1), 0x3f80);
  assert.equal(f32ToBf16Bits(-0), 0x8000);
  assert.equal(f32ToBf16Bits(0), 0x0000);
  assert.equal(f32ToBf16Bits(Infinity), 0x7f80);
  assert.equal(f32ToBf16Bits(-Infinity), 0xff80);
  assert.ok(isBf16NaN(f32ToBf16Bits(NaN)));
  // A NaN whose payload sits only in the low 16 bits must not become infinity.
  assert.ok(isBf16NaN(f32BitsToBf16Bits(0x7f800001)));
  assert.ok(isBf16NaN(f32BitsToBf16Bits(0xff800001)));
  assert.equal(f32BitsToBf16Bits(0xff800001) & 0x8000, 0x8000);
  // Ties: 1 + 2^-8 is halfway between 1 (0x3f80, even) and 1 + 2^-7 (0x3f81).
  assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80);
  assert.equal(f32ToBf16Bits(1 + 3 * 2 ** -8), 0x3f82); // between 0x3f81 and 0x3f82 (even)
  assert.equal(f32ToBf16Bits(1 + 2 ** -8 + 2 ** -23), 0x3f81); // just above the tie
  assert.equal(f32ToBf16Bits(-(1 + 2 ** -8 + 2 ** -23)), 0xbf81);
  assert.equal(f32BitsToBf16Bits(0x7f7fffff), 0x7f80); // float32 max rounds up to infinity
  assert.equal(f32BitsToBf16Bits(0x7f7f7fff), 0x7f7f); // just below the tie above bf16 max
  assert.equal(f32ToBf16Bits(2 ** -133), 0x0001);
  assert.equal(f32ToBf16Bits(2 ** -134), 0x0000); // tie between 0 and the min subnormal: even
  assert.equal(f32ToBf16Bits(3 * 2 ** -134), 0x0002); // tie between 1 and 2 subnormal units
});

void test("f16 bits to float32", () => {
  assert.ok(Object.is(f16BitsToF32(0x0000), 0));
  assert.ok(Object.is(f16BitsToF32(0x8000), -0));
  assert.equal(f16BitsToF32(0x3c00), 1);
  assert.equal(f16BitsToF32(0xc000), -2);
  assert.equal(f16BitsToF32(0x3555), 1365 / 4096); // exp 13, mant 341: (1 + 341/1024) / 4
  assert.equal(f16BitsToF32(0x7bff), 65504); // max: (2 - 2^-10) * 2^15
  assert.equal(f16BitsToF32(0x0400), 2 ** -14); // min normal
  assert.equal(f16BitsToF32(0x03ff), 1023 * 2 ** -24); // max subnormal
  assert.equal(f16BitsToF32(0x0001), 2 ** -24); // min subnormal
  assert.equal(f16BitsToF32(0x8001), -(2 ** -24));
  assert.equal(f16BitsToF32(0x7c00), Infinity);
  assert.equal(f16BitsToF32(0xfc00), -Infinity);
  assert.ok(Number.isNaN(f16BitsToF32(0x7e00)));
  assert.ok(Number.isNaN(f16BitsToF32(0x7c01)));
  assert.ok(Number.isNaN(f16BitsToF32(0xffff)));
});

void test("float32 to f16: rounding, overflow, subnormals, NaN", () => {
  assert.equal(f32ToF16Bits(1), 0x3c00);
  assert.equal(f32ToF16Bits(-2), 0xc000);
  assert.equal(f32ToF16Bits(0), 0x0000);
  assert.equal(f32ToF16Bits(-0), 0x8000);
  assert.equal(f32ToF16Bits(Infinity), 0x7c00);
  assert.equal(f32ToF16Bits(-Infinity), 0xfc00);
  assert.ok(isF16NaN(f32ToF16Bits(NaN)));
  assert.ok(isF16NaN(f32BitsToF16Bits(0x7f800001))); // payload below the kept bits stays NaN
  assert.equal(f32ToF16Bits(65504), 0x7bff);
  assert.equal(f32ToF16Bits(65519), 0x7bff); // below the 65520 midpoint
  assert.equal(f32ToF16Bits(65520), 0x7c00); // midpoint to 2^16: ties to even = infinity
  assert.equal(f32ToF16Bits(-65520), 0xfc00);
  assert.equal(f32ToF16Bits(1e6), 0x7c00);
  // Ties: 1 + 2^-11 lies halfway between 1 (0x3c00) and 1 + 2^-10 (0x3c01).
  assert.equal(f32ToF16Bits(1 + 2 ** -11), 0x3c00);
  assert.equal(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(f32ToF16Bits(1 + 2 ** -11 + 2 ** -20), 0x3c01);
  assert.equal(f32ToF16Bits(2047.5 * 2 ** -10), 0x4000); // (2 - 2^-11): tie between 0x3fff and 2.0 -> even 0x4000
  // Subnormals, in units of 2^-24.
  assert.equal(f32ToF16Bits(2 ** -24), 0x0001);
  assert.equal(f32ToF16Bits(2 ** -25), 0x0000); // half a unit: tie to even 0
  assert.equal(f32ToF16Bits(2 ** -25 + 2 ** -35), 0x0001);
  assert.equal(f32ToF16Bits(-(2 ** -25 + 2 ** -35)), 0x8001);
  assert.equal(f32ToF16Bits(3 * 2 ** -25), 0x0002); // 1.5 units -> 2
  assert.equal(f32ToF16Bits(5 * 2 ** -25), 0x0002); // 2.5 units -> 2
  assert.equal(f32ToF16Bits(1023 * 2 ** -24), 0x03ff);
  assert.equal(f32ToF16Bits(1023.5 * 2 ** -24), 0x0400); // tie into the min normal (even)
  assert.equal(f32ToF16Bits(2 ** -14), 0x0400);
  assert.equal(f32ToF16Bits(2 ** -26), 0x0000);
  assert.equal(f32ToF16Bits(1e-45), 0x0000); // float32 subnormal
  assert.equal(f32ToF16Bits(-1e-45), 0x8000);
});

void test("every finite f16 and bf16 round-trips, and every midpoint rounds to even", () => {
  for (let b = 0; b < 0x10000; b++) {
    if (!isF16NaN(b)) assert.equal(f32ToF16Bits(f16BitsToF32(b)), b);
    if (!isBf16NaN(b)) assert.equal(f32ToBf16Bits(bf16BitsToF32(b)), b);
  }
  // Between adjacent positive values lo < hi, the exact midpoint (representable in float32) goes
  // to the even one, and one float32 ulp either side goes to the nearer one.
  for (const [toBits, fromHalf, last] of [
    [f32ToF16Bits, f16BitsToF32, 0x7bff],
    [f32ToBf16Bits, bf16BitsToF32, 0x7f7f],
  ] as const) {
    for (let lo = 0; lo < last; lo++) {
      const mid = (fromHalf(lo) + fromHalf(lo + 1)) / 2;
      assert.equal(Math.fround(mid), mid);
      assert.equal(toBits(mid), lo % 2 === 0 ? lo : lo + 1);
      assert.equal(toBits(fromBits(bitsOf(mid) - 1)), lo);
      assert.equal(toBits(fromBits(bitsOf(mid) + 1)), lo + 1);
    }
  }
});

void test("f8 e4m3fn and e5m2 bits to float32", () => {
  assert.ok(Object.is(f8E4M3BitsToF32(0x00), 0));
  assert.ok(Object.is(f8E4M3BitsToF32(0x80), -0));
  assert.equal(f8E4M3BitsToF32(0x38), 1); // exp 7 = bias
  assert.equal(f8E4M3BitsToF32(0x01), 2 ** -9); // min subnormal: 1/8 * 2^-6
  assert.equal(f8E4M3BitsToF32(0x07), 7 * 2 ** -9);
  assert.equal(f8E4M3BitsToF32(0x08), 2 ** -6); // min normal
  assert.equal(f8E4M3BitsToF32(0x78), 256); // exp 15, mant 0 is finite (no infinities)
  assert.equal(f8E4M3BitsToF32(0x7e), 448); // max: 1.75 * 2^8
  assert.equal(f8E4M3BitsToF32(0xfe), -448);
  assert.ok(Number.isNaN(f8E4M3BitsToF32(0x7f)));
  assert.ok(Number.isNaN(f8E4M3BitsToF32(0xff)));
  assert.equal(f8E5M2BitsToF32(0x3c), 1);
  assert.equal(f8E5M2BitsToF32(0x7b), 57344); // max: 1.75 * 2^15
  assert.equal(f8E5M2BitsToF32(0x01), 2 ** -16); // min subnormal: 1/4 * 2^-14
  assert.equal(f8E5M2BitsToF32(0x7c), Infinity);
  assert.equal(f8E5M2BitsToF32(0xfc), -Infinity);
  assert.ok(Number.isNaN(f8E5M2BitsToF32(0x7d)));
});
