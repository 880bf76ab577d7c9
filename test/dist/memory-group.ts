// An all-gather among `world` callers in one process (call i of every rank meets call i of the others), as a
// Collective whose other operations fail: for tests of what is built on all-gather alone.
import assert from "node:assert/strict";
import type { Collective } from "../../src/dist/collective.ts";

export function memoryGroup(world: number): (rank: number) => Collective {
  const rounds: { parts: Float32Array[]; resolve: ((all: Float32Array) => void)[] }[] = [];
  const calls = new Array<number>(world).fill(0);
  const allGather = (rank: number, local: Float32Array): Promise<Float32Array> =>
    new Promise((resolve) => {
      const round = (rounds[calls[rank]!++] ??= { parts: [], resolve: [] });
      round.parts[rank] = local.slice();
      round.resolve.push(resolve);
      if (round.resolve.length === world) {
        const all = new Float32Array(world * local.length);
        round.parts.forEach((p, r) => {
          assert.equal(p.length, local.length, "every rank gathers as many elements");
          all.set(p, r * local.length);
        });
        for (const done of round.resolve) done(all.slice());
      }
    });
  const unused = (): never => assert.fail("only allGather is used");
  return (rank) => ({ rank, worldSize: world, allGather: (x) => allGather(rank, x), allReduceSum: unused, reduceScatterSum: unused, broadcast: unused, barrier: unused, abort: unused, close: unused });
}

