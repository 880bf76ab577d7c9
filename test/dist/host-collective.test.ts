// The host transport with real processes: 2 and 3 ranks agree on all-reduce, reduce-scatter, all-gather,
// broadcast and barrier (checked against sums computed here); a rank that calls another collective, is
// killed with SIGKILL, hangs, or runs another configuration makes every rank fail with a DIST error
// naming it, within the bound.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { freePort } from "./free-port.ts";
import { fileURLToPath } from "node:url";
import { rankData } from "./rank-data.ts";
import { startStoreServer } from "../../src/dist/store/server.ts";
import { connectStore } from "../../src/dist/store/client.ts";

const script = fileURLToPath(new URL("./host-scenario.ts", import.meta.url));

interface RankResult {
  code: number | null;
  lines: Record<string, unknown>[];
  stderr: string;
}

/** Starts `worldSize` ranks of a scenario; `onLine` may act on what a rank prints (e.g. kill it). */
async function runRanks(
  scenario: string,
  worldSize: number,
  extraEnv: Record<string, string> = {},
  onLine?: (rank: number, line: Record<string, unknown>, kill: (r: number, signal?: NodeJS.Signals) => void) => void,
): Promise<RankResult[]> {
  const port = extraEnv.MASTER_PORT ?? String(await freePort());
  const children = Array.from({ length: worldSize }, (_, rank) =>
    spawn(process.execPath, ["--import", "tsx", script, scenario], {
      env: { ...process.env, RANK: String(rank), WORLD_SIZE: String(worldSize), MASTER_ADDR: "127.0.0.1", MASTER_PORT: port, ...extraEnv },
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  const kill = (r: number, signal: NodeJS.Signals = "SIGKILL"): void => {
    children[r]!.kill(signal);
  };
  const guard = setTimeout(() => {
    for (const c of children) c.kill("SIGKILL");
  }, 60_000);
  const results = await Promise.all(
    children.map(
      (child, rank) =>
        new Promise<RankResult>((resolve) => {
          const result: RankResult = { code: null, lines: [], stderr: "" };
          let buffer = "";
          child.stdout.on("data", (d: Buffer) => {
            buffer += d.toString();
            for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
              const line = JSON.parse(buffer.slice(0, nl)) as Record<string, unknown>;
              buffer = buffer.slice(nl + 1);
              result.lines.push(line);
              onLine?.(rank, line, kill);
            }
          });
          child.stderr.on("data", (d: Buffer) => (result.stderr += d.toString()));
          child.on("exit", (code) => {
            result.code = code;
            resolve(result);
          });
        }),
    ),
  );
  clearTimeout(guard);
  return results;
}

const errorOf = (res: RankResult): string => {
  const message = res.lines.find((l) => l.event === "error")?.message;
  return typeof message === "string" ? message : `no error line: ${JSON.stringify(res.lines)} ${res.stderr}`;
};

function expectCollectivesAgree(results: RankResult[], worldSize: number): void {
  const n = 6 * worldSize;
  const sum = Float32Array.from({ length: n }, (_, i) => {
    let s = 0;
    for (let r = 0; r < worldSize; r++) s += rankData(r, n)[i]!;
    return s;
  });
  results.forEach((res, rank) => {
    assert.equal(res.code, 0, `rank ${rank}: ${JSON.stringify(res.lines)} ${res.stderr}`);
    const done = res.lines.find((l) => l.event === "done")!;
    assert.deepEqual(done.reduced, [...sum]);
    assert.deepEqual(done.shard, [...sum.slice(rank * 6, rank * 6 + 6)]);
    assert.deepEqual(done.gathered, Array.from({ length: worldSize }, (_, r) => [...rankData(r, 4)]).flat());
    assert.deepEqual(done.message, Array(5).fill(worldSize - 1 + 10));
  });
}

void test("3 ranks joining as training does (rank 0 hosts the TCPStore, publishes its hub there, heartbeats): collectives agree", { timeout: 90_000 }, async () => {
  expectCollectivesAgree(await runRanks("collectives", 3, { TEST_VIA: "job" }), 3);
});

void test("under torchrun's agent store (TORCHELASTIC_USE_AGENT_STORE) the ranks use the agent's store, under the restart's own keys", { timeout: 90_000 }, async () => {
  const agent = await startStoreServer({ host: "127.0.0.1", port: 0 });
  try {
    const results = await runRanks("collectives", 2, { TEST_VIA: "job", MASTER_PORT: String(agent.port), TORCHELASTIC_USE_AGENT_STORE: "True", TORCHELASTIC_RESTART_COUNT: "3" });
    expectCollectivesAgree(results, 2);
    const look = await connectStore({ host: "127.0.0.1", port: agent.port, timeoutMs: 2000 });
    const rank1 = JSON.parse((await look.get("tuna/attempt_3/rank/1")).toString()) as { host: string; pid: number };
    assert.equal(typeof rank1.pid, "number");
    assert.match((await look.get("tuna/attempt_3/host-collective")).toString(), /^127\.0\.0\.1:\d+$/);
    assert.equal(await look.check(["tuna/attempt_0/rank/0"]), false, "another attempt's keys are apart");
    look.close();
  } finally {
    await agent.close();
  }
});

void test("a rank stopped with SIGSTOP (its sockets stay open): the others fail within the bound, naming it", { timeout: 90_000 }, async () => {
  const started = performance.now();
  let ready = 0;
  const results = await runRanks("kill", 3, { TEST_VIA: "job", TEST_TIMEOUT_MS: "3000" }, (rank, line, kill) => {
    if (line.event === "ready" && ++ready === 3) setTimeout(() => { kill(2, "SIGSTOP"); }, 200);
    if (rank === 0 && line.event === "error") kill(2);
  });
  assert.equal(results[0]!.code, 1);
  assert.match(errorOf(results[0]!), /rank 2/);
  assert.equal(results[1]!.code, 1);
  assert.match(errorOf(results[1]!), /rank 2/);
  assert.ok(performance.now() - started < 20_000);
});

for (const [worldSize, scenario] of [[2, "collectives"], [3, "collectives"], [3, "concurrent"]] as const) {
  const how = scenario === "concurrent" ? ", all made at once (they run in the order made)" : "";
  void test(`${worldSize} ranks: all-reduce, reduce-scatter, all-gather, broadcast and barrier agree with sums computed here${how}`, { timeout: 90_000 }, async () => {
    const results = await runRanks(scenario, worldSize);
    const n = 6 * worldSize;
    const sum = Float32Array.from({ length: n }, (_, i) => {
      let s = 0;
      for (let r = 0; r < worldSize; r++) s += rankData(r, n)[i]!;
      return s;
    });
    results.forEach((res, rank) => {
      assert.equal(res.code, 0, `rank ${rank}: ${JSON.stringify(res.lines)} ${res.stderr}`);
      const done = res.lines.find((l) => l.event === "done")!;
      assert.deepEqual(done.reduced, [...sum]);
      assert.deepEqual(done.shard, [...sum.slice(rank * 6, rank * 6 + 6)]);
      assert.deepEqual(done.gathered, Array.from({ length: worldSize }, (_, r) => [...rankData(r, 4)]).flat());
      assert.deepEqual(done.message, Array(5).fill(worldSize - 1 + 10));
    });
  });
}

void test("a rank that calls another collective: every rank fails, naming the rank and both calls", { timeout: 90_000 }, async () => {
  const results = await runRanks("mismatch", 3);
  for (const res of results) {
    assert.equal(res.code, 1);
    assert.match(errorOf(res), /rank 1 on .* called broadcast #1 while rank 0 called allReduce #1/);
  }
});

void test("a rank killed with SIGKILL: the others fail within the bound, naming it", { timeout: 90_000 }, async () => {
  const started = performance.now();
  let ready = 0;
  const results = await runRanks("kill", 3, {}, (_rank, line, kill) => {
    if (line.event === "ready" && ++ready === 3) setTimeout(() => { kill(2); }, 300);
  });
  assert.equal(results[2]!.code, null, "rank 2 was killed");
  assert.equal(results[0]!.code, 1);
  assert.match(errorOf(results[0]!), /rank 2 on .*closed the connection .*during allReduce #1/);
  assert.equal(results[1]!.code, 1);
  assert.match(errorOf(results[1]!), /rank 0 stopped the job: rank 2/);
  assert.ok(performance.now() - started < 30_000);
});

void test("a rank that hangs: the others fail after the timeout, naming it", { timeout: 90_000 }, async () => {
  const results = await runRanks("hang", 2, { TEST_TIMEOUT_MS: "1500" }, (rank, line, kill) => {
    // Once rank 0 has failed, the hanging rank is no longer needed.
    if (rank === 0 && line.event === "error") kill(1);
  });
  assert.equal(results[0]!.code, 1);
  assert.match(errorOf(results[0]!), /rank 1 on .*no answer .* within 1\.5 s while waiting for its allReduce #1/);
});

void test("ranks with different configurations are refused at the rendezvous, naming what differs", { timeout: 90_000 }, async () => {
  const results = await runRanks("identity", 2);
  for (const res of results) {
    assert.equal(res.code, 1);
    assert.match(errorOf(res), /rank 1 on .* has config "lr=2e-4" but rank 0 has "lr=1e-4"/);
  }
});

void test("a rendezvous port in use and an unreachable rank 0 are clear DIST errors within the bound", { timeout: 60_000 }, async () => {
  const { createHostCollective } = await import("../../src/dist/host/star.ts");
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
  const port = (blocker.address() as { port: number }).port;
  try {
    await assert.rejects(createHostCollective({ rank: 0, worldSize: 2, hub: { kind: "fixed", host: "127.0.0.1", port }, timeoutMs: 2000 }), (e: unknown) => {
      assert.ok(e instanceof Error && /DIST|port is in use/.test(`${(e as { code?: string }).code ?? ""} ${e.message}`), String(e));
      assert.match((e).message, /rank 0 cannot listen on 127\.0\.0\.1:\d+: the port is in use; choose another --master_port/);
      return true;
    });
  } finally {
    await new Promise((r) => blocker.close(r));
  }
  const started = performance.now();
  const nobody = await freePort();
  await assert.rejects(createHostCollective({ rank: 1, worldSize: 2, hub: { kind: "fixed", host: "127.0.0.1", port: nobody }, timeoutMs: 1500 }), (e: unknown) => {
    assert.match((e as Error).message, /rank 1 could not reach rank 0 at 127\.0\.0\.1:\d+ within 1\.5 s .*check MASTER_ADDR\/MASTER_PORT/);
    return true;
  });
  assert.ok(performance.now() - started < 10_000);
});
