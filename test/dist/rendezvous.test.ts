// The rendezvous in one process: rank 0 hosts the store, ranks learn each other's hosts, and heartbeats
// name a rank that stopped beating but not one that left on purpose.
import { test } from "node:test";
import assert from "node:assert/strict";
import { joinRendezvous, startHeartbeat } from "../../src/dist/rendezvous.ts";
import type { ProcessPlace } from "../../src/dist/launch-env.ts";
import { TunaError } from "../../src/util/errors.ts";
import { freePort } from "./free-port.ts";

const placeOf = (rank: number, port: number): ProcessPlace => ({
  rank, worldSize: 2, localRank: rank, localWorldSize: 2, masterAddr: "127.0.0.1", masterPort: port, agentStore: false, restartCount: 0, source: "torchrun",
});

void test("rendezvous: rank 0 hosts the store and names the others by host and pid; a silent rank is reported, a rank that left is not", async () => {
  const port = await freePort();
  const [r0, r1] = await Promise.all([joinRendezvous(placeOf(0, port), { timeoutMs: 5000 }), joinRendezvous(placeOf(1, port), { timeoutMs: 5000 })]);
  assert.match(r0.describeRank(1), new RegExp(`^rank 1 on .+ \\(pid ${process.pid}\\)$`));
  assert.equal(r0.advertiseHost, "127.0.0.1");

  const stale: TunaError[] = [];
  const beat0 = startHeartbeat(r0, placeOf(0, port), { intervalMs: 50, staleMs: 400, onStale: (e) => stale.push(e) });
  const beat1 = startHeartbeat(r1, placeOf(1, port), { intervalMs: 50, staleMs: 400, onStale: () => undefined });
  await new Promise((r) => setTimeout(r, 600));
  assert.deepEqual(stale, [], "both beat");
  await beat1.stop(); // left on purpose
  await new Promise((r) => setTimeout(r, 700));
  assert.deepEqual(stale, [], "a rank that left is not stale");
  await r1.store.set("tuna/attempt_0/heartbeat/1", "41"); // beats once more, then falls silent
  await new Promise((r) => setTimeout(r, 800));
  assert.equal(stale.length, 1);
  const first: unknown = stale[0];
  assert.ok(first instanceof TunaError);
  assert.match(first.message, /rank 1 on .* has not answered for \d+ s \(heartbeat\)/);
  await beat0.stop();
  await r1.close();
  await r0.close();
});

void test("rendezvous: a rank that never joins is named at rank 0 within the bound", async () => {
  const port = await freePort();
  const started = Date.now();
  await assert.rejects(joinRendezvous(placeOf(0, port), { timeoutMs: 400 }), (e: unknown) => e instanceof TunaError && e.code === "DIST" && /not every rank of 2 joined within 0\.4 s/.test(e.message));
  assert.ok(Date.now() - started < 3000);
});

void test("rendezvous: TUNA_TCPSTORE_PROTOCOL must name a protocol", async () => {
  const saved = process.env.TUNA_TCPSTORE_PROTOCOL;
  process.env.TUNA_TCPSTORE_PROTOCOL = "torch3";
  try {
    await assert.rejects(joinRendezvous(placeOf(1, await freePort()), { timeoutMs: 100 }), /TUNA_TCPSTORE_PROTOCOL=torch3: use torch2/);
  } finally {
    if (saved === undefined) delete process.env.TUNA_TCPSTORE_PROTOCOL;
    else process.env.TUNA_TCPSTORE_PROTOCOL = saved;
  }
});

void test("TUNA_COLLECTIVE: nccl or host, or unset for the default; anything else is a clear error", async () => {
  const { requestedTransport } = await import("../../src/dist/gpu-collective.ts");
  assert.equal(requestedTransport({}), undefined);
  assert.equal(requestedTransport({ TUNA_COLLECTIVE: "host" }), "host");
  assert.equal(requestedTransport({ TUNA_COLLECTIVE: "nccl" }), "nccl");
  assert.throws(() => requestedTransport({ TUNA_COLLECTIVE: "gloo" }), /TUNA_COLLECTIVE=gloo: use nccl .* or host/);
});
