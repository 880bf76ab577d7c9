// Gradient buckets: contiguous, covering the buffer exactly once, within the cap, and ready after the right layer.
import { test } from "node:test";
import assert from "node:assert/strict";
import { layerOf, planBuckets } from "../../src/train/buckets.ts";

const names = ["model.embed_tokens.rows", "model.layers.0.q.lora_A", "model.layers.0.q.lora_B", "model.layers.1.q.lora_A", "model.layers.1.q.lora_B", "model.layers.2.v.lora_A", "lm_head.rows"];
const sizes = [10, 8, 8, 8, 8, 20, 6];
let offset = 0;
const entries = names.map((name, i) => {
  const e = { name, shape: [sizes[i]!], offset, size: sizes[i]! };
  offset += sizes[i]!;
  return e;
});
const trainable = { entries, total: offset };

void test("layer numbers come from HF-style names; tensors outside the layers have none", () => {
  assert.equal(layerOf("base_model.model.model.layers.17.mlp.down_proj.lora_B.weight"), 17);
  assert.equal(layerOf("base_model.model.lm_head.weight"), undefined);
});

void test("buckets tile the buffer from the end, stay within the cap, and are ready after the lowest layer they hold", () => {
  const buckets = planBuckets(trainable, 16 * 4);
  // Coverage: every element once, contiguous, within the cap.
  const sorted = [...buckets].sort((a, b) => a.lo - b.lo);
  let at = 0;
  for (const b of sorted) {
    assert.equal(b.lo, at);
    assert.ok(b.hi - b.lo <= 16 && b.hi > b.lo);
    at = b.hi;
  }
  assert.equal(at, trainable.total);
  // From the end: [62,68) lm_head+[52..62) layer 2 -> end (holds lm_head); then layer 2's rest, 1, 0, embeddings.
  assert.deepEqual(buckets.map((b) => [b.lo, b.hi, b.readyAfterLayer]), [
    [52, 68, undefined],
    [36, 52, 1],
    [20, 36, 0],
    [4, 20, undefined],
    [0, 4, undefined],
  ]);
  // One big bucket: ready at the end.
  assert.deepEqual(planBuckets(trainable, 1 << 20), [{ lo: 0, hi: 68, readyAfterLayer: undefined }]);
});

void test("bucketed all-reduce: started as layers finish, in one order whatever the timing, every element summed once", async () => {
  const { createCpuBackend } = await import("../../src/backend/cpu/index.ts");
  const { createTrainableBuffers } = await import("../../src/model/trainable.ts");
  const { createDataParallel } = await import("../../src/train/data-parallel.ts");
  const be = createCpuBackend();
  const t = createTrainableBuffers(be, entries.map((e) => ({ name: e.name, shape: e.shape })));
  const calls: number[][] = [];
  const collective = {
    rank: 0,
    worldSize: 2,
    allReduceSum: (data: Float32Array) => {
      calls.push([...data]);
      for (let i = 0; i < data.length; i++) data[i]! *= 2; // as if the other rank held the same values
      return Promise.resolve();
    },
    reduceScatterSum: () => Promise.reject(new Error("unused")),
    allGather: () => Promise.reject(new Error("unused")),
    broadcast: () => Promise.reject(new Error("unused")),
    barrier: () => Promise.resolve(),
    abort: () => undefined,
    close: () => Promise.resolve(),
  };
  const grads = Float32Array.from({ length: t.total }, (_, i) => i + 1);
  be.upload(t.grads, grads);
  const parallel = createDataParallel(be, t, collective, 0, (16 * 4) / 2 ** 20);
  const run = parallel.startBuckets(t.grads)!;
  run.layerDone(2);
  run.layerDone(1); // makes [36, 52) ready
  run.layerDone(0); // makes [20, 36) ready
  await run.finish();
  // Canonical order: layer buckets from the last layer down, then those ready only at the end, in plan order.
  assert.deepEqual(calls.map((c) => [c[0], c.length]), [[37, 16], [21, 16], [53, 16], [5, 16], [1, 4]]);
  assert.deepEqual([...(await be.downloadF32(t.grads))].slice(0, t.total), [...grads].map((g) => 2 * g));
  // A rank that saw no layer finish (no micro-batch this step) starts the same buckets in the same order.
  calls.length = 0;
  const idle = parallel.startBuckets(t.grads)!;
  await idle.finish();
  assert.deepEqual(calls.map((c) => c.length), [16, 16, 16, 16, 4]);
  assert.deepEqual(calls.map((c) => c[0]), [74, 42, 106, 10, 2]);
});
