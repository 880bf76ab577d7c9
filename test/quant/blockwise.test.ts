// Tests of blockwise quantization: hand-built packed bytes decoded by the §2.7 formula, nibble order
// and padding, all-zero and NaN blocks as the CUDA kernel treats them, round-trip error bounds.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  dequantize4bit,
  dequantize4bitBf16,
  dequantizeBlockwise8bit,
  quantize4bit,
  quantizeBlockwise8bit,
} from "../../src/quant/blockwise.ts";
import { dynamicMap, fp4Code, nf4Code } from "../../src/quant/codes.ts";
import { f32ToBf16Bits } from "../../src/util/half.ts";
import { assertTunaError, normalF32, unpackNibbles } from "./helpers.ts";

const f = Math.fround;

// §1.1 and §1.2, written out here rather than taken from the implementation.
const NF4 = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
].map(f);
const FP4_POSITIVE = [0, 0.0052083334885537624, 0.6666666865348816, 1.0, 0.3333333432674408, 0.5, 0.1666666716337204, 0.25].map(f);
const fp4 = (code: number): number => (code & 8 ? -1 : 1) * FP4_POSITIVE[code & 7]!;

const maxGap = (levels: number[]): number => {
  const sorted = [...levels].sort((a, b) => a - b);
  return Math.max(...sorted.slice(1).map((v, i) => v - sorted[i]!));
};

void test("dequantize NF4: hand-built bytes, high nibble first, odd count, two blocks", () => {
  // Nibbles 0 15 | 7 8 | 8 (14 = padding): five elements in one block with absmax 2.
  const packed = Uint8Array.of(0x0f, 0x78, 0x8e);
  const out = dequantize4bit(packed, Float32Array.of(2), 5, "nf4", 64);
  assert.deepEqual([...out], [-2, 2, 0, f(NF4[8]! * 2), f(NF4[8]! * 2)]);

  // 70 elements at blocksize 64: element i uses absmax[floor(i / 64)].
  const bytes = new Uint8Array(35).fill(0xf0);
  const absmax = Float32Array.of(f(0.3), 3);
  const wide = dequantize4bit(bytes, absmax, 70, "nf4", 64);
  for (let i = 0; i < 70; i++) assert.equal(wide[i], (i % 2 === 0 ? 1 : -1) * absmax[i < 64 ? 0 : 1]!, `element ${i}`);
});

void test("dequantize FP4 and the bf16 output: float32 products, code 8 is -0.0", () => {
  const a = f(0.7);
  const packed = Uint8Array.of(0x38, 0x9f, 0x65);
  const out = dequantize4bit(packed, Float32Array.of(a), 6, "fp4", 64);
  const expected = [3, 8, 9, 15, 6, 5].map((c) => f(fp4(c) * a));
  assert.deepEqual([...out], expected);
  assert.ok(Object.is(out[1], -0));
  const bf16 = dequantize4bitBf16(packed, Float32Array.of(a), 6, "fp4", 64);
  assert.deepEqual([...bf16], expected.map(f32ToBf16Bits));
  assert.equal(bf16[1], 0x8000);
});

void test("quantize: nibble order, the padding nibble is the code of the kernel's zero", () => {
  assert.deepEqual([...quantize4bit(Float32Array.of(1, -1), "nf4").packed], [0xf0]);
  // One element: absmax 0.5, code(1.0) = 15 in the high nibble, code(0) in the low nibble.
  assert.deepEqual([...quantize4bit(Float32Array.of(0.5), "nf4").packed], [0xf7]);
  assert.deepEqual([...quantize4bit(Float32Array.of(0.5), "fp4").packed], [0x30]);
  // Scaled by 1/0.5: -1 -> 0b1011, 0.5 -> 0b0101, -0.25 -> 0b1111 (0.25 = 3/12 is level 0b111), pad 0.
  assert.deepEqual([...quantize4bit(Float32Array.of(-0.5, 0.25, -0.125), "fp4").packed], [0xb5, 0xf0]);
});

void test("an all-zero block: absmax 0, 0 * (1/0) = NaN takes code 0, which decodes to zero", () => {
  const nf4 = quantize4bit(new Float32Array(64), "nf4");
  assert.deepEqual([...nf4.absmax], [0]);
  assert.ok(nf4.packed.every((b) => b === 0));
  const back = dequantize4bit(nf4.packed, nf4.absmax, 64, "nf4");
  assert.ok([...back].every((v) => Object.is(v, -0)), "NF4 code 0 is -1.0; -1.0 * 0 = -0.0");
  const fp4 = quantize4bit(new Float32Array(64), "fp4");
  assert.ok(fp4.packed.every((b) => b === 0));
  assert.ok([...dequantize4bit(fp4.packed, fp4.absmax, 64, "fp4")].every((v) => Object.is(v, 0)));
  // A partial zero block of odd length: the padding nibble is code 0 too.
  const odd = quantize4bit(new Float32Array(3), "nf4");
  assert.deepEqual([...odd.packed], [0, 0]);
});

void test("NaN: the kernel's fmaxf skips it in the absmax, and the NaN itself takes code 0", () => {
  const x = new Float32Array(64);
  x[0] = NaN;
  x[1] = 0.5;
  x[2] = -2;
  const q = quantize4bit(x, "nf4");
  assert.deepEqual([...q.absmax], [2]);
  const codes = unpackNibbles(q.packed, 3);
  // NaN fails every test -> 0; 0.5 * (1/2) = 0.25 lies in (0.2035, 0.2920] -> 10; -2 * (1/2) = -1 -> 0.
  assert.deepEqual(codes, [0, 10, 0]);
  assert.deepEqual(unpackNibbles(quantize4bit(x, "fp4").packed, 3), [0, 0b0111, 0b1011]);

  // A full block of NaN: every thread's fmaxf stays at its start, -FLT_MAX.
  const allNaN = quantize4bit(new Float32Array(64).fill(NaN), "nf4");
  assert.deepEqual([...allNaN.absmax], [f(-3.4028234663852886e38)]);
  assert.ok(allNaN.packed.every((b) => b === 0));
  // A partial block also reduces over the zeros the kernel pads it with, so its absmax is 0.
  assert.deepEqual([...quantize4bit(Float32Array.of(NaN, NaN, NaN), "nf4").absmax], [0]);
});

void test("round trip: absmax is max |x| per block, error at most half the largest code gap times absmax", () => {
  for (const [quantType, levels] of [["nf4", NF4], ["fp4", FP4_POSITIVE.flatMap((v) => [v, -v])]] as const) {
    const bound = maxGap([...levels]) / 2;
    for (const blocksize of [32, 64, 128, 4096]) {
      const n = blocksize * 3 + 13; // a partial last block and an odd count
      const x = normalF32(n, blocksize + n, 0.02);
      const q = quantize4bit(x, quantType, blocksize);
      assert.equal(q.packed.length, Math.ceil(n / 2));
      assert.equal(q.absmax.length, 4);
      const back = dequantize4bit(q.packed, q.absmax, n, quantType, blocksize);
      for (let b = 0; b < 4; b++) {
        const block = x.subarray(b * blocksize, Math.min(n, (b + 1) * blocksize));
        const a = Math.max(...[...block].map(Math.abs));
        assert.equal(q.absmax[b], a);
        for (let i = 0; i < block.length; i++) {
          const err = Math.abs(block[i]! - back[b * blocksize + i]!);
          assert.ok(err <= bound * a * (1 + 1e-6), `${quantType} bs ${blocksize} element ${b * blocksize + i}: error ${err} > ${bound * a}`);
        }
      }
    }
  }
});

void test("8-bit blockwise over the dynamic map: round trip within half a map gap of the block absmax", () => {
  const map = dynamicMap();
  const bound = maxGap([...map]) / 2;
  const n = 256 * 2 + 7;
  const x = normalF32(n, 3, 0.5);
  const { codes, absmax } = quantizeBlockwise8bit(x, map, 256);
  assert.equal(absmax.length, 3);
  const back = dequantizeBlockwise8bit(codes, absmax, map, 256);
  for (let i = 0; i < n; i++) {
    const a = absmax[Math.floor(i / 256)]!;
    assert.equal(back[i], f(map[codes[i]!]! * a));
    assert.ok(Math.abs(back[i]! - x[i]!) <= bound * a * (1 + 1e-6), `element ${i}`);
  }
});

void test("blocksizes bnb does not support are refused", () => {
  assert.throws(() => quantize4bit(new Float32Array(8), "nf4", 48), (e) => assertTunaError(e, "CONFIG_INVALID", "48", "64"));
  assert.throws(() => quantizeBlockwise8bit(new Float32Array(8), dynamicMap(), 100), (e) => assertTunaError(e, "CONFIG_INVALID"));
});

void test("the table-driven loop agrees with the code trees on random float32 bit patterns in [-1, 1] and NaN", () => {
  // Blocks of 64: element 0 is 1.0 (so the scale is exactly 1), the other 63 random patterns.
  const blocks = 800;
  const x = new Float32Array(blocks * 64);
  const bits = new Uint32Array(x.buffer);
  let s = 12345;
  for (let i = 0; i < x.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    bits[i] = s;
    if (i % 64 === 0) x[i] = 1;
    else if (!(Math.abs(x[i]!) <= 1) && !Number.isNaN(x[i]!)) x[i] = x[i]! / 2 ** 128; // keep |x| <= 1
  }
  for (const [quantType, tree] of [["nf4", nf4Code], ["fp4", fp4Code]] as const) {
    const codes = unpackNibbles(quantize4bit(x, quantType).packed, x.length);
    for (let i = 0; i < x.length; i++) assert.equal(codes[i], tree(x[i]!), `${quantType} at ${x[i]}`);
  }
});
