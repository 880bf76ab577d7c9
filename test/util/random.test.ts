import { test } from "node:test";
import assert from "node:assert/strict";
import { createRng } from "../../src/util/random.ts";

test("same seed, same stream; different seed, different stream", () => {
  const a = createRng(7);
  const b = createRng(7);
  const c = createRng(8);
  const xs = Array.from({ length: 100 }, () => a.uniform());
  assert.deepEqual(xs, Array.from({ length: 100 }, () => b.uniform()));
  assert.notDeepEqual(xs, Array.from({ length: 100 }, () => c.uniform()));
});

test("a saved state resumes the stream exactly", () => {
  const a = createRng(3);
  for (let i = 0; i < 10; i++) a.normal();
  const resumed = createRng(0, a.state());
  assert.deepEqual(Array.from({ length: 50 }, () => a.normal()), Array.from({ length: 50 }, () => resumed.normal()));
});

test("uniform and normal have the right moments", () => {
  const r = createRng(1);
  const n = 200_000;
  let su = 0, sn = 0, sn2 = 0, min = 1, max = 0;
  for (let i = 0; i < n; i++) {
    const u = r.uniform();
    su += u;
    min = Math.min(min, u);
    max = Math.max(max, u);
    const z = r.normal();
    sn += z;
    sn2 += z * z;
  }
  assert.ok(min >= 0 && max < 1);
  assert.ok(Math.abs(su / n - 0.5) < 0.005);
  assert.ok(Math.abs(sn / n) < 0.01);
  assert.ok(Math.abs(sn2 / n - 1) < 0.01);
});

test("rngAt: a place always gives the same stream, and neighbouring places give unrelated ones", async () => {
  const { rngAt } = await import("../../src/util/random.ts");
  const draw = (...place: number[]): number[] => {
    const r = rngAt(42, ...place);
    return [r.uniform(), r.uniform(), r.uniform()];
  };
  assert.deepEqual(draw(1, 0, 3, 1), draw(1, 0, 3, 1));
  const places = [[1, 0, 3, 1], [1, 0, 3, 2], [1, 0, 4, 1], [1, 1, 3, 1], [2, 0, 3, 1]];
  const firsts = new Set(places.map((p) => draw(...p)[0]));
  assert.equal(firsts.size, places.length);
  assert.notDeepEqual(draw(1, 0, 3, 1), (() => { const r = rngAt(43, 1, 0, 3, 1); return [r.uniform(), r.uniform(), r.uniform()]; })());
});
