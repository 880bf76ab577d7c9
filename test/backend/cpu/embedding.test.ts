// Embedding lookup (f32 and bf16 tables), the scatter-add backward with repeated and negative ids, range
// errors, and central differences for the table gradient.
import { test } from "node:test";
import assert from "node:assert/strict";
import { assertInternal, assertUlps, backend, checkGradient, intsOf, project, randn, randnBf16, rng, tensorOf } from "./helpers.ts";

const be = backend();
const r = rng(71);

void test("embeddingForward copies table rows, from bf16 tables too", async () => {
  const [V, C] = [6, 3];
  const table = randnBf16(r, V * C);
  const ids = [5, 0, 5, 2];
  const expected = ids.flatMap((id) => Array.from(table.subarray(id * C, (id + 1) * C)));
  for (const dtype of ["f32", "bf16"] as const) {
    const out = be.alloc("f32", [ids.length, C]);
    be.embeddingForward(out, intsOf(be, ids), tensorOf(be, [V, C], table, dtype));
    assert.deepEqual(Array.from(await be.downloadF32(out)), expected);
  }
  assertInternal(() => { be.embeddingForward(be.alloc("f32", [1, C]), intsOf(be, [6]), tensorOf(be, [V, C], table)); }, "element 0 is 6, outside the table's [0, 6)");
  assertInternal(() => { be.embeddingForward(be.alloc("f32", [2, C]), intsOf(be, [1]), tensorOf(be, [V, C], table)); }, "out shape [2, 3] does not match [1, 3]");
});

void test("embeddingBackward adds each token's gradient to its row, repeated ids summed, negative ids skipped", async () => {
  const [V, C] = [4, 2];
  const ids = [1, 3, 1, -1, 1];
  const dv = randn(r, ids.length * C);
  const start = randn(r, V * C);
  const dtable = tensorOf(be, [V, C], start);
  be.embeddingBackward(dtable, tensorOf(be, [ids.length, C], dv), intsOf(be, ids));
  const expected = Float64Array.from(start);
  ids.forEach((id, n) => {
    if (id < 0) return;
    for (let c = 0; c < C; c++) expected[id * C + c]! += dv[n * C + c]!;
  });
  assertUlps(await be.downloadF32(dtable), expected, 0.5, "dtable");
  assertInternal(() => { be.embeddingBackward(dtable, tensorOf(be, [1, C], dv.slice(0, C)), intsOf(be, [4])); }, "element 0 is 4");
});

void test("embeddingBackward matches central differences of the lookup", async () => {
  const [V, C] = [5, 3];
  const ids = intsOf(be, [4, 0, 4, 2]);
  const tv = randn(r, V * C);
  const R = randn(r, 4 * C);
  const dtable = be.alloc("f32", [V, C]);
  be.embeddingBackward(dtable, tensorOf(be, [4, C], R), ids);
  await checkGradient("table", tv, await be.downloadF32(dtable), async (t) => {
    const out = be.alloc("f32", [4, C]);
    be.embeddingForward(out, ids, tensorOf(be, [V, C], t));
    return project(await be.downloadF32(out), R);
  });
});
