// DoRA's ops against float64 formulas and central differences: row norms, the output combination (also into
// base itself, and in bf16), and the backward's three gradients; aliasing and shape errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { assertClose, assertInternal, assertUlps, backend, checkGradient, project, randn, rng, tensorOf } from "./helpers.ts";
import { f32ToBf16Bits } from "../../../src/util/half.ts";

const be = backend();
const r = rng(71);

void test("rowNorms is the L2 norm of each row", async () => {
  const R = 5;
  const C = 37;
  const xv = randn(r, R * C);
  const norms = be.alloc("f32", [R]);
  be.rowNorms(norms, tensorOf(be, [R, C], xv));
  const expected = Array.from({ length: R }, (_, i) => Math.hypot(...xv.subarray(i * C, (i + 1) * C)));
  assertUlps(await be.downloadF32(norms), expected, 0.5, "rowNorms");
  // bf16 norms: the f32 result rounded once.
  const n16 = be.alloc("bf16", [R]);
  be.rowNorms(n16, tensorOf(be, [R, C], xv));
  assert.deepEqual(await be.download(n16), Uint16Array.from(expected, (v) => f32ToBf16Bits(Math.fround(v))));
  assertInternal(() => { be.rowNorms(be.alloc("f32", [4]), tensorOf(be, [R, C], xv)); }, "rowNorms: norms shape [4] does not match [5]");
});

interface Case {
  N: number;
  F: number;
  y0: Float32Array;
  base: Float32Array;
  lora: Float32Array;
  m: Float32Array;
  n: Float32Array;
}

function makeCase(N: number, F: number): Case {
  const n = Float32Array.from(randn(r, F), (v) => 0.5 + Math.abs(v));
  return { N, F, y0: randn(r, N * F), base: randn(r, N * F), lora: randn(r, N * F), m: Float32Array.from(n, (v) => v * (1 + 0.2 * r.uniform())), n };
}

/** y0 + (g - 1) * base + g * lora, in float64. */
function expectedForward(c: Case, y0 = c.y0): number[] {
  return Array.from(y0, (y, i) => {
    const g = c.m[i % c.F]! / c.n[i % c.F]!;
    return y + (g - 1) * c.base[i]! + g * c.lora[i]!;
  });
}

async function forward(c: Case, m = c.m, base = c.base, lora = c.lora): Promise<Float32Array> {
  const y = tensorOf(be, [c.N, c.F], c.y0);
  be.doraForward(y, tensorOf(be, [c.N, c.F], base), tensorOf(be, [c.N, c.F], lora), tensorOf(be, [c.F], m), tensorOf(be, [c.F], c.n));
  return be.downloadF32(y);
}

void test("doraForward adds (g - 1) * base + g * lora with g = magnitude / norms per column, also into base itself", async () => {
  const c = makeCase(6, 9);
  assertUlps(await forward(c), expectedForward(c), 1, "doraForward");
  // y is base (the no-dropout path): y = g * (base + lora).
  const base = tensorOf(be, [c.N, c.F], c.base);
  be.doraForward(base, base, tensorOf(be, [c.N, c.F], c.lora), tensorOf(be, [c.F], c.m), tensorOf(be, [c.F], c.n));
  assertUlps(await be.downloadF32(base), expectedForward(c, c.base), 1, "doraForward into base");
  // bf16 y: the f32 result of the bf16 inputs rounded once.
  const y16 = tensorOf(be, [c.N, c.F], c.y0, "bf16");
  const y16Values = await be.downloadF32(y16);
  be.doraForward(y16, tensorOf(be, [c.N, c.F], c.base), tensorOf(be, [c.N, c.F], c.lora), tensorOf(be, [c.F], c.m), tensorOf(be, [c.F], c.n));
  assert.deepEqual(await be.download(y16), Uint16Array.from(expectedForward(c, y16Values), (v) => f32ToBf16Bits(Math.fround(v))));
  const y = tensorOf(be, [c.N, c.F], c.y0);
  assertInternal(() => { be.doraForward(y, tensorOf(be, [c.N, c.F], c.base), y, tensorOf(be, [c.F], c.m), tensorOf(be, [c.F], c.n)); }, "doraForward: y", "shares storage with lora");
  assertInternal(() => { be.doraForward(y, y, tensorOf(be, [c.N, c.F], c.lora), be.alloc("f32", [c.F + 1]), tensorOf(be, [c.F], c.n)); }, "doraForward: magnitude shape [10] does not match [9]");
});

void test("doraBackward's magnitude, lora and base gradients match central differences of the forward", async () => {
  const c = makeCase(4, 5);
  const w = randn(r, c.N * c.F);
  const run = async (dbaseWanted: boolean, alias: boolean): Promise<{ dm: Float32Array; dl: Float32Array; db: Float32Array | null }> => {
    const dm = tensorOf(be, [c.F], Float32Array.from({ length: c.F }, () => 0.25));
    const base = tensorOf(be, [c.N, c.F], c.base);
    const lora = tensorOf(be, [c.N, c.F], c.lora);
    const dl = alias ? lora : be.alloc("f32", [c.N, c.F]);
    const db = !dbaseWanted ? null : alias ? base : be.alloc("f32", [c.N, c.F]);
    be.doraBackward(dm, dl, db, tensorOf(be, [c.N, c.F], w), base, lora, tensorOf(be, [c.F], c.m), tensorOf(be, [c.F], c.n));
    return { dm: Float32Array.from(await be.downloadF32(dm), (v) => v - 0.25), dl: await be.downloadF32(dl), db: db === null ? null : await be.downloadF32(db) };
  };
  const g = await run(true, false);
  await checkGradient("magnitude", c.m, g.dm, async (m) => project(await forward(c, m), w), 1e-3);
  await checkGradient("lora", c.lora, g.dl, async (lora) => project(await forward(c, c.m, c.base, lora), w), 1e-3);
  await checkGradient("base", c.base, g.db!, async (base) => project(await forward(c, c.m, base), w), 1e-3);
  // Written into lora and base themselves: the same values (each element is read before it is written).
  const aliased = await run(true, true);
  assert.deepEqual(aliased, g);
  const noBase = await run(false, false);
  assert.deepEqual(noBase.dm, g.dm);
  assert.equal(noBase.db, null);
  assertClose(noBase.dl, g.dl, 0, "dlora without dbase");
  const t = tensorOf(be, [c.N, c.F], c.base);
  assertInternal(() => { be.doraBackward(tensorOf(be, [c.F], c.m), t, null, t, t, t, tensorOf(be, [c.F], c.m), tensorOf(be, [c.F], c.n)); }, "doraBackward: dlora", "shares storage with dy");
});
