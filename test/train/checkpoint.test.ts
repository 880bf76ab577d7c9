import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, writeFile, mkdir } from "node:fs/promises";
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

test("while a checkpoint is written, resume still finds the previous ones: a crash at any moment loses nothing", async () => {
  const out = await mkdtemp(join(tmpdir(), "tuna-ckpt-"));
  await save(out, 2);
  await save(out, 4);
  // A new step, and a re-save of step 4 (a run resumed from checkpoint-2 reaching step 4 again).
  for (const step of [6, 4]) {
    await saveCheckpointAtomically(out, step, async (dir) => {
      await writeFile(join(dir, "adapter_model.safetensors"), "new weights");
      await writeFile(join(dir, TRAINER_STATE_FILE), JSON.stringify({ global_step: step, fresh: true }));
      // Everything is written but not yet renamed: what a crash now would leave.
      assert.deepEqual((await listCheckpoints(out)).map((c) => c.step), step === 6 ? [2, 4] : [2, 4, 6]);
      assert.equal(await readFile(join(out, "checkpoint-4", TRAINER_STATE_FILE), "utf8"), JSON.stringify({ global_step: 4 }));
    });
    assert.deepEqual(JSON.parse(await readFile(join(out, `checkpoint-${step}`, TRAINER_STATE_FILE), "utf8")), { global_step: step, fresh: true });
  }
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
