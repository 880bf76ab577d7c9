// Tests of the code choice against the spec's tables (specs/nf4_fp4.md §2.4, §3.1, §3.2): values on
// every NF4/FP4 threshold and one float32 ulp either side, the 8-bit search's ties, the dynamic map.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { FP4_CODE, FP4_INTERVAL_CODES, FP4_QUANT_MAP, FP4_THRESHOLDS, NF4_CODE, NF4_THRESHOLDS, code8bit, createDynamicMap, dynamicMap, fp4Code, nf4Code } from "../../src/quant/codes.ts";
import { quantize4bit } from "../../src/quant/blockwise.ts";
import { nextDownF32, nextUpF32, unpackNibbles } from "./helpers.ts";

const f = Math.fround;

// §2.4's dQuantizeNF4 table, each threshold with the leaf the tree reaches at/below it and above it.
const NF4_TREE: readonly [threshold: number, atOrBelow: number, above: number][] = [
  [0.03979014977812767, 7, 8], // root
  [0.3893125355243683, 11, 12], // 1
  [0.6427869200706482, 13, 14], // 11
  [0.8614784181118011, 14, 15], // 111
  [0.5016634166240692, 12, 13], // 110
  [0.2035212516784668, 9, 10], // 10
  [0.2920137718319893, 10, 11], // 101
  [0.1202552504837513, 8, 9], // 100
  [-0.33967943489551544, 3, 4], // 0
  [-0.13791173323988914, 5, 6], // 01
  [-0.045525018125772476, 6, 7], // 011
  [-0.23460740596055984, 4, 5], // 010
  [-0.6106329262256622, 1, 2], // 00
  [-0.4599952697753906, 2, 3], // 001
  [-0.8480964004993439, 0, 1], // 000
];

// §2.4's dQuantizeFP4 tree on |x|: threshold, magnitude bits at/below, above.
const FP4_TREE: readonly [threshold: number, atOrBelow: number, above: number][] = [
  [0.29166667, 0b111, 0b100],
  [0.583333, 0b101, 0b010],
  [0.8333333, 0b010, 0b011],
  [0.4166667, 0b100, 0b101],
  [0.0859375, 0b001, 0b110],
  [0.20833333, 0b110, 0b111],
  [0.00260417, 0b000, 0b001],
];

// §2.4's equivalent rule: the NF4 code is the number of thresholds strictly below x.
const nf4ByCount = (x: number): number => NF4_TREE.filter(([t]) => f(t) < x).length;

/** Quantizes each value alone in a 64-block that also holds 1.0, so absmax = 1 and x is scaled exactly. */
function codesThroughKernel(values: number[], quantType: "nf4" | "fp4"): number[] {
  const x = new Float32Array(values.length * 64);
  values.forEach((v, i) => {
    x[i * 64] = 1;
    x[i * 64 + 1] = v;
  });
  const { packed, absmax } = quantize4bit(x, quantType, 64);
  assert.ok(absmax.every((a) => a === 1));
  const nibbles = unpackNibbles(packed, x.length);
  return values.map((_, i) => nibbles[i * 64 + 1]!);
}

void test("NF4: on every threshold the lower code, one ulp above the upper, one ulp below the lower", () => {
  const values: number[] = [];
  const expected: number[] = [];
  for (const [literal, atOrBelow, above] of NF4_TREE) {
    const t = f(literal); // the kernel compares against the float32 literal
    values.push(t, nextUpF32(t), nextDownF32(t));
    expected.push(atOrBelow, above, atOrBelow);
  }
  assert.deepEqual(values.map(nf4Code), expected);
  assert.deepEqual(values.map(nf4ByCount), expected);
  assert.deepEqual(codesThroughKernel(values, "nf4"), expected);
});

// §1.1's NF4 table, copied from the spec (not from src/quant/codes.ts): the levels by code.
const NF4_LEVELS_FROM_SPEC = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
];

void test("NF4: every level equals the spec's table as float32, and the tree's thresholds are the midpoints of neighbours", () => {
  assert.equal(NF4_CODE.length, 16);
  NF4_LEVELS_FROM_SPEC.forEach((level, code) => {
    assert.equal(NF4_CODE[code], f(level), `code ${code}`);
  });
  // Independent of both tables' source: the kernel's thresholds sit halfway between adjacent levels.
  const thresholds = NF4_TREE.map(([t]) => t).sort((a, b) => a - b);
  thresholds.forEach((t, k) => {
    const midpoint = (NF4_LEVELS_FROM_SPEC[k]! + NF4_LEVELS_FROM_SPEC[k + 1]!) / 2;
    assert.ok(Math.abs(t - midpoint) < 1e-7, `threshold ${k}: ${t} vs midpoint ${midpoint}`);
  });
});

void test("NF4: the levels themselves, the ends, zero, -0 and NaN", () => {
  // Each level lies strictly between its neighbouring midpoints, so it maps to its own code.
  assert.deepEqual([...NF4_CODE].map(nf4Code), [...Array(16).keys()]);
  assert.deepEqual([-1, 1, 0, -0, NaN, -2, 2].map(nf4Code), [0, 15, 7, 7, 0, 0, 15]);
});

void test("FP4: on every threshold, one ulp either side, both signs; -0 and NaN count as positive", () => {
  const values: number[] = [];
  const expected: number[] = [];
  for (const [literal, atOrBelow, above] of FP4_TREE) {
    const t = f(literal);
    values.push(t, nextUpF32(t), nextDownF32(t), -t, -nextUpF32(t), -nextDownF32(t));
    expected.push(atOrBelow, above, atOrBelow, atOrBelow | 8, above | 8, atOrBelow | 8);
  }
  assert.deepEqual(values.map(fp4Code), expected);
  assert.deepEqual(codesThroughKernel(values, "fp4"), expected);
  assert.deepEqual([0, -0, NaN, 1, -1, 2 ** -149, -(2 ** -149)].map(fp4Code), [0, 0, 0, 3, 11, 0, 8]);
});

void test("FP4 tables: the dequantizer's -0.0 at code 8, bnb's saved quant_map has +0.0 there", () => {
  const raw = [0, 0.0625, 8, 12, 4, 6, 2, 3];
  for (let v = 0; v < 16; v++) {
    const magnitude = f(raw[v & 7]! / 12);
    assert.ok(Object.is(FP4_CODE[v], v & 8 ? -magnitude : magnitude), `code ${v}`);
  }
  assert.ok(Object.is(FP4_CODE[8], -0));
  assert.ok(Object.is(FP4_QUANT_MAP[8], 0));
  assert.deepEqual([...FP4_QUANT_MAP.subarray(9)], [...FP4_CODE.subarray(9)]);
  // §1.2's float32 values.
  assert.deepEqual([...FP4_CODE.subarray(0, 8)], [0, 0.0052083334885537624, 0.6666666865348816, 1, 0.3333333432674408, 0.5, 0.1666666716337204, 0.25]);
});

void test("the scaling multiplies by the float32 reciprocal, not divides", () => {
  // Find an absmax a and value x whose code differs between x * float32(1/a) and x / a; the kernel's
  // (and tuna's) choice is the multiply.
  let found: { a: number; x: number; t: number } | undefined;
  search: for (const a of [3, 7, 11, 0.3, 1.7, 0.07, 13.1, 2.9]) {
    const inv = f(1 / f(a));
    for (const [literal] of NF4_TREE) {
      let x = f(f(literal) * f(a));
      for (let k = 0; k < 64; k++, x = nextUpF32(x)) {
        if (Math.abs(x) > f(a)) break;
        if (nf4ByCount(f(x * inv)) !== nf4ByCount(f(x / f(a)))) {
          found = { a: f(a), x, t: literal };
          break search;
        }
      }
    }
  }
  assert.ok(found, "no distinguishing value found");
  const { a, x } = found;
  const block = new Float32Array(64);
  block[0] = a;
  block[1] = x;
  const code = unpackNibbles(quantize4bit(block, "nf4").packed, 2)[1];
  assert.equal(code, nf4ByCount(f(x * f(1 / a))));
  assert.notEqual(code, nf4ByCount(f(x / a)));
});

void test("dynamic map: 256 ascending values, 0 at 127, 1 at 255, no -1, the spec's entries and mirror", () => {
  for (const map of [createDynamicMap({ fma: true }), createDynamicMap({ fma: false })]) {
    assert.equal(map.length, 256);
    for (let i = 1; i < 256; i++) assert.ok(map[i]! > map[i - 1]!, `not ascending at ${i}`);
    assert.equal(map[127], 0);
    assert.equal(map[255], 1);
    assert.equal(map[0], f(-0.99296875));
    assert.ok(!map.includes(-1));
    // §3.2: entry 128 + k = -entry(126 - k) for k = 0..126.
    for (let k = 0; k <= 126; k++) assert.equal(map[128 + k], -map[126 - k]!, `mirror at ${k}`);
  }
  // §3.2's table (numpy emulation without a fused multiply-add), a sample of its entries.
  const spec: [number, number][] = [
    [0, -0.992968738079071], [1, -0.9789062738418579], [18, -0.7398437857627869], [36, -0.48671871423721313],
    [51, -0.2757812440395355], [63, -0.10703125596046448], [64, -0.09859374910593033], [87, -0.0339062474668026],
    [96, -0.009718749672174454], [100, -0.0074687497690320015], [112, -0.0009437500848434865], [117, -0.00038124999264255166],
    [120, -8.874999912222847e-5], [123, -2.1249998098937795e-5], [125, -3.250000190746505e-6], [126, -5.500000384017767e-7],
  ];
  const noFma = createDynamicMap({ fma: false });
  for (const [i, v] of spec) assert.equal(noFma[i], v, `entry ${i}`);
});

void test("dynamic map: bit for bit what torch 2.11 computes, with and without a fused multiply-add", () => {
  const fixture = JSON.parse(readFileSync(new URL("fixtures/torch-dynamic-map.json", import.meta.url), "utf8")) as { fma: string[]; noFma: string[] };
  const bitsOf = (m: Float32Array): string[] => [...new Uint32Array(m.buffer)].map((u) => u.toString(16).padStart(8, "0"));
  assert.deepEqual(bitsOf(createDynamicMap({ fma: true })), fixture.fma);
  assert.deepEqual(bitsOf(createDynamicMap({ fma: false })), fixture.noFma);
  assert.deepEqual(bitsOf(dynamicMap()), fixture.fma);
});

void test("8-bit search: each map entry maps to itself, others to a nearest entry, ties as the kernel breaks them", () => {
  const map = dynamicMap();
  for (let k = 0; k < 256; k++) assert.equal(code8bit(map, map[k]!), k, `entry ${k}`);
  let s = 7;
  for (let n = 0; n < 2000; n++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const x = f((s / 2 ** 32) * 2.2 - 1.1);
    const q = code8bit(map, x);
    const best = Math.min(...[...map].map((c) => Math.abs(x - c)));
    assert.equal(Math.abs(x - map[q]!), best, `x = ${x}`);
  }
  // x = map[128] / 2, halfway between map[127] = 0 and map[128]: the search goes up from pivot 127,
  // then down 191, 159, 143, 135, 131, 129 to the final pivot 128; x is not above map[128], and not
  // below the midpoint (0 + map[128]) * 0.5 = x, so it returns the pivot, 128: the tie goes up.
  assert.equal(code8bit(map, map[128]! / 2), 128);
  // x = map[126] / 2, halfway between map[126] and 0: down from 127, then up 63, 95, 111, 119, 123,
  // 125 to the final pivot 126; x is above map[126] but not above the midpoint, so 126: the tie goes down.
  assert.equal(code8bit(map, map[126]! / 2), 126);
  assert.equal(code8bit(map, NaN), 0);
  assert.equal(code8bit(map, 5), 255);
  assert.equal(code8bit(map, -5), 0);
});

void test("counting the thresholds a value exceeds (what the GPU kernel does) equals the NF4 and FP4 trees", () => {
  const probes: number[] = [0, -0, Infinity, -Infinity, NaN, 1, -1, 1e-30, -1e-30];
  for (const t of [...NF4_THRESHOLDS, ...FP4_THRESHOLDS]) {
    for (const v of [t, -t]) probes.push(v, nextUpF32(v), nextDownF32(v));
  }
  for (let i = 0; i < 20000; i++) probes.push(Math.fround(Math.sin(i * 12.9898) * 1.3));
  for (let i = 1; i < NF4_THRESHOLDS.length; i++) assert.ok(NF4_THRESHOLDS[i - 1]! < NF4_THRESHOLDS[i]!, "NF4 thresholds ascend");
  for (let i = 1; i < FP4_THRESHOLDS.length; i++) assert.ok(FP4_THRESHOLDS[i - 1]! < FP4_THRESHOLDS[i]!, "FP4 thresholds ascend");
  for (const x of probes) {
    const nf4 = NF4_THRESHOLDS.reduce((k, t) => k + (x > t ? 1 : 0), 0);
    assert.equal(nf4, nf4Code(x), `nf4 of ${x}`);
    const a = Math.abs(x);
    const fp4 = FP4_INTERVAL_CODES[FP4_THRESHOLDS.reduce((k, t) => k + (a > t ? 1 : 0), 0)]! + (x < 0 ? 8 : 0);
    assert.equal(fp4, fp4Code(x), `fp4 of ${x}`);
  }
});
