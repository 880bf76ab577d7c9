// One rank of a host-transport scenario, started by host-collective.test.ts as a real process with
// RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set. Prints one JSON line of results, or the error.
import { createHostCollective } from "../../src/dist/host/star.ts";
import { processPlace } from "../../src/dist/launch-env.ts";
import { joinJob } from "../../src/dist/job.ts";
import { isTunaError } from "../../src/util/errors.ts";
import { rankData } from "./rank-data.ts";

const scenario = process.argv[2] ?? "collectives";
const place = processPlace();
const { rank, worldSize } = place;


try {
  const identity = scenario === "identity" && rank === 1 ? { config: "lr=2e-4" } : { config: "lr=1e-4" };
  const timeoutMs = Number(process.env.TEST_TIMEOUT_MS ?? 20_000);
  // TEST_VIA=job: the whole membership (rendezvous store, hub published there, heartbeats), as training joins.
  const job = process.env.TEST_VIA === "job" ? await joinJob(place, { timeoutMs, identity }) : undefined;
  const collective = job?.collective ?? (await createHostCollective({ rank, worldSize, hub: { kind: "fixed", host: place.masterAddr!, port: place.masterPort! }, timeoutMs, identity }));
  console.log(JSON.stringify({ rank, event: "ready" }));
  if (scenario === "collectives" || scenario === "concurrent") {
    const n = 6 * worldSize;
    const reduced = rankData(rank, n);
    const message = new Uint8Array(5).fill(rank + 10);
    let shard: Float32Array;
    let gathered: Float32Array;
    if (scenario === "collectives") {
      await collective.allReduceSum(reduced);
      shard = await collective.reduceScatterSum(rankData(rank, n));
      gathered = await collective.allGather(rankData(rank, 4));
      await collective.broadcast(message, worldSize - 1);
      await collective.barrier();
    } else {
      // All five made at once (a prefetch in flight when the next call comes): they run in the order made.
      [, shard, gathered] = await Promise.all([
        collective.allReduceSum(reduced),
        collective.reduceScatterSum(rankData(rank, n)),
        collective.allGather(rankData(rank, 4)),
        collective.broadcast(message, worldSize - 1),
        collective.barrier(),
      ]);
    }
    console.log(JSON.stringify({ rank, event: "done", reduced: [...reduced], shard: [...shard], gathered: [...gathered], message: [...message] }));
  } else if (scenario === "mismatch") {
    if (rank === 1) await collective.broadcast(new Uint8Array(4), 0);
    else await collective.allReduceSum(new Float32Array(1));
  } else if (scenario === "kill" || scenario === "hang") {
    // The test kills rank 2 (or rank 1 never calls) while the others wait in the all-reduce.
    if ((scenario === "kill" && rank === 2) || (scenario === "hang" && rank === 1)) await new Promise((r) => setTimeout(r, 60_000));
    await collective.allReduceSum(new Float32Array(3));
  }
  await (job !== undefined ? job.leave() : collective.close());
  process.exit(0);
} catch (e) {
  console.log(JSON.stringify({ rank, event: "error", code: isTunaError(e) ? e.code : "other", message: e instanceof Error ? e.message : String(e) }));
  process.exit(1);
}
