// The groups ZeRO-3 shards over: every rank, or (HYBRID_SHARD) the ranks of one machine, whose all-gather
// returns only its machine's shares; a job whose machines' ranks are not numbered consecutively is refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { machineGroup, worldGroup } from "../../src/dist/gather-group.ts";
import type { ProcessPlace } from "../../src/dist/launch-env.ts";
import { isTunaError } from "../../src/util/errors.ts";
import { memoryGroup } from "./memory-group.ts";

const place = (rank: number, worldSize: number, localRank: number, localWorldSize: number): ProcessPlace => ({
  rank,
  worldSize,
  localRank,
  localWorldSize,
  masterAddr: undefined,
  masterPort: undefined,
  agentStore: false,
  restartCount: 0,
  source: "torchrun",
});

void test("HYBRID_SHARD: 2 machines of 2 ranks; each rank's group is its machine, all-gathers return that machine's shares", async () => {
  const group = memoryGroup(4);
  const groups = await Promise.all([0, 1, 2, 3].map((r) => machineGroup(group(r), place(r, 4, r % 2, 2))));
  assert.deepEqual(groups.map((g) => [g.index, g.size]), [[0, 2], [1, 2], [0, 2], [1, 2]]);
  const got = await Promise.all(groups.map((g, r) => g.allGather(Float32Array.of(10 * r, 10 * r + 1))));
  assert.deepEqual(got.map((x) => [...x]), [[0, 1, 10, 11], [0, 1, 10, 11], [20, 21, 30, 31], [20, 21, 30, 31]]);
  const world = memoryGroup(3);
  const all = await Promise.all([0, 1, 2].map((r) => worldGroup(world(r)).allGather(Float32Array.of(r))));
  assert.deepEqual(all.map((x) => [...x]), [[0, 1, 2], [0, 1, 2], [0, 1, 2]]);
});

void test("HYBRID_SHARD refuses machines whose ranks are interleaved or of different sizes, on every rank, saying what to do", async () => {
  for (const places of [
    [place(0, 4, 0, 2), place(1, 4, 0, 2), place(2, 4, 1, 2), place(3, 4, 1, 2)], // round-robin placement
    [place(0, 3, 0, 2), place(1, 3, 1, 2), place(2, 3, 0, 1)], // machines of 2 and 1
  ]) {
    const group = memoryGroup(places.length);
    const results = await Promise.allSettled(places.map((p) => machineGroup(group(p.rank), p)));
    for (const r of results) {
      assert.equal(r.status, "rejected");
      const e = (r).reason as Error;
      assert.ok(isTunaError(e) && e.code === "DIST", String(e));
      assert.match(e.message, /numbered consecutively.*FULL_SHARD/s);
    }
  }
});
