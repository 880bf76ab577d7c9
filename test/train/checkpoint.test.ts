import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { listCheckpoints, resolveResumePath, rotateCheckpoints, saveCheckpointAtomically, TRAINER_STATE_FILE } from "../../src/train/checkpoint.ts";
import { TunaError } from "../../src/util/errors.ts";

async function save(out: string, step: number): Promise<void> {
  await saveCheckpointAtomically(out, step, (dir) => writeFile(join(dir, TRAINER_STATE_FILE), JSON.stringify({ global_step: step })));
}

test("a save that fails (disk full) leaves no partial folder and the previous checkpoint usable", async () => {
  const out = await mkdtemp(join(tmpdir(), "tuna-ckpt-"));
  await save(out, 2);
  const diskFull = Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
  await assert.rejects(
    saveCheckpointAtomically(out, 4, async (dir) => {
      await writeFile(join(dir, "adapter_model.safetensors"), "partial");
      throw diskFull;
    }),
    (e: unknown) => e instanceof TunaError && e.code === "IO" && /disk is full; the previous checkpoints are intact/.test(e.message),
  );
  assert.deepEqual(await readdir(out), ["checkpoint-2"]);
  assert.equal(await resolveResumePath("true", out), join(out, "checkpoint-2"));
});

test("only complete checkpoints count; rotation keeps the newest; resume true picks the latest", async () => {
  const out = await mkdtemp(join(tmpdir(), "tuna-ckpt-"));
  for (const step of [2, 10, 4, 6]) await save(out, step);
  await mkdir(join(out, "checkpoint-12")); // no trainer_state.json: a half-written folder from elsewhere
  assert.deepEqual((await listCheckpoints(out)).map((c) => c.step), [2, 4, 6, 10]);
  assert.equal(await resolveResumePath("true", out), join(out, "checkpoint-10"));
  const removed = await rotateCheckpoints(out, 2);
  assert.deepEqual(removed, [join(out, "checkpoint-2"), join(out, "checkpoint-4")]);
  assert.deepEqual((await listCheckpoints(out)).map((c) => c.step), [6, 10]);
  await assert.rejects(resolveResumePath("true", await mkdtemp(join(tmpdir(), "tuna-empty-"))), /no complete checkpoint-N folder/);
});
