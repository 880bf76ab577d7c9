// A checkpoint written by several ranks: visible only after every rank wrote its part; when one rank fails,
// nothing of it is kept and every rank fails (the failing one with its own reason, the others naming it).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHostCollective } from "../../src/dist/host/star.ts";
import type { Collective } from "../../src/dist/collective.ts";
import { saveCheckpointTogether } from "../../src/train/checkpoint.ts";
import { TunaError } from "../../src/util/errors.ts";
import { freePort } from "../dist/free-port.ts";

async function twoRanks(timeoutMs = 5000): Promise<Collective[]> {
  const port = await freePort();
  return Promise.all([0, 1].map((rank) => createHostCollective({ rank, worldSize: 2, hub: { kind: "fixed", host: "127.0.0.1", port }, timeoutMs })));
}

void test("every rank writes its part, then rank 0 finishes and renames: the folder holds all parts", async () => {
  const out = await mkdtemp(join(tmpdir(), "tuna-together-"));
  const ranks = await twoRanks();
  try {
    await Promise.all(
      ranks.map((c) =>
        saveCheckpointTogether(out, 4, c, {
          everyRank: (dir) => writeFile(join(dir, `part-${c.rank}`), "x"),
          ...(c.rank === 0 ? { lead: (dir: string) => writeFile(join(dir, "trainer_state.json"), "{}") } : {}),
        }),
      ),
    );
    assert.deepEqual((await readdir(out)).sort(), ["checkpoint-4"]);
    assert.deepEqual((await readdir(join(out, "checkpoint-4"))).sort(), ["part-0", "part-1", "trainer_state.json"]);
  } finally {
    for (const c of ranks) await c.close();
    await rm(out, { recursive: true, force: true });
  }
});

void test("a rank whose write fails (disk full): no checkpoint folder, no temporary folder, every rank fails naming why", async () => {
  const out = await mkdtemp(join(tmpdir(), "tuna-together-"));
  const ranks = await twoRanks();
  try {
    const results = await Promise.allSettled(
      ranks.map((c) =>
        saveCheckpointTogether(out, 6, c, {
          everyRank: async (dir) => {
            if (c.rank === 1) throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
            await writeFile(join(dir, "part-0"), "x");
          },
          lead: () => Promise.resolve(),
        }),
      ),
    );
    const [r0, r1] = results.map((r) => (r.status === "rejected" ? (r.reason as unknown) : undefined));
    assert.ok(r1 instanceof TunaError && r1.code === "IO" && /disk is full/.test(r1.message), String(r1));
    assert.ok(r0 instanceof TunaError && r0.code === "DIST" && /could not write its part/.test(r0.message) && /previous checkpoints are intact/.test(r0.message), String(r0));
    assert.deepEqual(await readdir(out), [], "nothing of the failed save is left");
  } finally {
    for (const c of ranks) await c.close();
    await rm(out, { recursive: true, force: true });
  }
});

void test("sumOverRanks: float64 sums over ranks though the collectives carry float32, the same on every rank", async () => {
  const { sumOverRanks } = await import("../../src/dist/collective.ts");
  const ranks = await twoRanks();
  try {
    const values = [
      [1e10 + 0.123456789, 3, 0.1],
      [2e-9, 4, 0.2],
    ];
    const sums = await Promise.all(ranks.map((c) => sumOverRanks(c, values[c.rank]!)));
    const expected = [1e10 + 0.123456789 + 2e-9, 7, 0.1 + 0.2];
    for (const s of sums) {
      s.forEach((v, i) => {
        assert.ok(Math.abs(v - expected[i]!) <= Math.abs(expected[i]!) * 1e-14, `${v} vs ${expected[i]!}`);
      });
    }
    assert.deepEqual(sums[0], sums[1]);
    // float32 alone would lose the 0.123456789 of 1e10 entirely.
    assert.notEqual(Math.fround(1e10 + 0.123456789), 1e10 + 0.123456789);
  } finally {
    for (const c of ranks) await c.close();
  }
});

void test("rank 0 writing for longer than the collectives' bound (a large model) does not time the others out", async () => {
  const out = await mkdtemp(join(tmpdir(), "tuna-together-"));
  const ranks = await twoRanks(300);
  try {
    await Promise.all(
      ranks.map((c) =>
        saveCheckpointTogether(out, 2, c, {
          everyRank: () => Promise.resolve(),
          ...(c.rank === 0 ? { lead: async (dir: string) => { await new Promise((r) => setTimeout(r, 900)); await writeFile(join(dir, "trainer_state.json"), "{}"); } } : {}),
        }),
      ),
    );
    assert.deepEqual(await readdir(out), ["checkpoint-2"]);
  } finally {
    for (const c of ranks) await c.close();
    await rm(out, { recursive: true, force: true });
  }
});
