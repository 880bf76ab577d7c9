// The bad-input suite (issue 10): every case in cases.ts runs through the CLI in-process and must exit
// with its code, say its key words, print no stack trace, and leave every file outside its own output
// folder as it was (fixtures, other cases' folders, the hub cache's surroundings).
// TUNA_SHOW_BAD_INPUT=1 prints each case's error line, to review the messages by eye.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { cp, lstat, mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { runCliWithEnv } from "../cli/run-cli.ts";
import { GOLDEN } from "../model/causal-lm/golden-harness.ts";
import { startFakeHub, type FakeHub } from "../hub/fake-hub.ts";
import { CASES, type CaseDirs } from "./cases.ts";

const root = new URL("../..", import.meta.url).pathname;
let sandbox = "";
let hub: FakeHub;
let shared: Omit<CaseDirs, "dir" | "out">;

before(async () => {
  sandbox = await mkdtemp(join(tmpdir(), "tuna-bad-input-"));
  const fixtures = join(sandbox, "fixtures");
  await cp(join(root, "examples/tiny-llama"), join(fixtures, "tiny-llama"), { recursive: true });
  await cp(join(GOLDEN, "llama/model"), join(fixtures, "golden-model"), { recursive: true });
  await cp(join(GOLDEN, "llama/adapter"), join(fixtures, "golden-adapter"), { recursive: true });
  await cp(join(root, "test/fixtures/chat-small.jsonl"), join(fixtures, "data", "train.jsonl"), { recursive: true });
  hub = await startFakeHub([
    { kind: "model", id: "evil/etag", commit: "e".repeat(40), files: { "config.json": "{}", "model.safetensors": "w" }, etags: { "config.json": '"../../../../escaped"' } },
    { kind: "dataset", id: "evil/listing", commit: "f".repeat(40), files: { "train.jsonl": "{}\n", "../../../../escaped.jsonl": "{}\n" } },
  ]);
  shared = {
    model: join(fixtures, "tiny-llama"),
    golden: join(fixtures, "golden-model"),
    adapter: join(fixtures, "golden-adapter"),
    data: join(fixtures, "data", "train.jsonl"),
    hub: hub.url,
  };
});

after(async () => {
  await hub.close();
  await rm(sandbox, { recursive: true, force: true });
});

/** Every path under `dir` with what would show a change: type, size, mtime and ctime. */
async function snapshot(dir: string, skip: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string): Promise<void> => {
    for (const name of await readdir(d)) {
      const full = join(d, name);
      if (full === skip || full.startsWith(`${skip}/`)) continue;
      const s = await lstat(full);
      // A folder counts by its entries (creating the output folder touches its parent's mtime).
      out.set(relative(sandbox, full), s.isDirectory() ? "d" : `${s.isSymbolicLink() ? "l" : "f"} ${s.size} ${s.mtimeMs} ${s.ctimeMs}`);
      if (s.isDirectory()) await walk(full);
    }
  };
  await walk(dir);
  return out;
}

void test(`the bad-input suite has at least 60 cases across every area`, () => {
  assert.ok(CASES.length >= 60, `${CASES.length} cases`);
  const areas = new Set(CASES.map((c) => c.area));
  for (const area of ["config", "data", "weights", "adapters", "checkpoints", "hub"]) assert.ok(areas.has(area as never), area);
  assert.equal(new Set(CASES.map((c) => c.name)).size, CASES.length, "case names are unique");
});

CASES.forEach((c, i) => {
  void test(`bad input [${c.area}] ${c.name}`, { timeout: 60_000 }, async () => {
    const dir = join(sandbox, "cases", String(i));
    await mkdir(dir, { recursive: true });
    const dirs: CaseDirs = { ...shared, dir, out: join(dir, "out") };
    await c.setup?.(dirs);
    const before = await snapshot(sandbox, dirs.out);
    const r = await runCliWithEnv(c.args(dirs), c.env?.(dirs) ?? {});
    if (process.env.TUNA_SHOW_BAD_INPUT !== undefined) console.log(`### ${c.name}\n${r.err.split("\n").filter((l) => / error \[|warning/.test(l)).join("\n")}`);
    assert.equal(r.code, c.code, `exit code ${r.code}, stderr:\n${r.err}`);
    const errorLine = r.err.split("\n").filter((l) => / error \[/.test(l)).join("\n");
    assert.ok(errorLine.length > 0, `no error line in:\n${r.err}`);
    for (const pattern of c.message) assert.match(r.err, pattern);
    assert.doesNotMatch(r.err, /\n\s+at .+:\d+:\d+\)?\n/, "a stack trace was printed");
    const after = await snapshot(sandbox, dirs.out);
    const changed = [...new Set([...before.keys(), ...after.keys()])].filter((k) => before.get(k) !== after.get(k));
    // The case's hub cache is its own business (downloads into HF_HOME inside its folder).
    const outside = changed.filter((k) => !k.startsWith(relative(sandbox, join(dir, "hf"))));
    assert.deepEqual(outside, [], "files outside the output folder changed");
  });
});
