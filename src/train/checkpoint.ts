// checkpoint-N folders: written under a temporary name and renamed, so a crash mid-save never leaves
// a half checkpoint that resume would pick; rotation by save_total_limit; finding the latest one.
import { mkdir, readdir, rename, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Collective } from "../dist/collective.ts";
import { TunaError, errorMessage } from "../util/errors.ts";
import { isDir, isFile } from "../util/fs-checks.ts";

export const TRAINER_STATE_FILE = "trainer_state.json";
/** How long ranks wait for each other around a checkpoint write (an hour: a 70B full save on a slow disk). */
const SAVE_WAIT_MS = 3_600_000;
const CHECKPOINT_RE = /^checkpoint-(\d+)$/;

export function checkpointName(step: number): string {
  return `checkpoint-${step}`;
}

/**
 * Runs `write(tmpDir)` then renames tmpDir to `<outputDir>/checkpoint-<step>`. A failure (disk full...)
 * removes the temporary folder and leaves earlier checkpoints untouched.
 */
export async function saveCheckpointAtomically(outputDir: string, step: number, write: (dir: string) => Promise<void>): Promise<string> {
  const final = join(outputDir, checkpointName(step));
  const tmp = join(outputDir, `.${checkpointName(step)}.tmp-${process.pid}`);
  await rm(tmp, { recursive: true, force: true });
  try {
    await mkdir(tmp, { recursive: true });
    await write(tmp);
    // A checkpoint of the same step (a re-run after resume) is replaced whole.
    await rm(final, { recursive: true, force: true });
    await rename(tmp, final);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw saveError(final, e);
  }
  return final;
}

/** A failed save as the error to raise: a TunaError as it is, else IO naming the folder (and a full disk). */
function saveError(final: string, e: unknown): TunaError {
  if (e instanceof TunaError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  const hint = code === "ENOSPC" ? " The disk is full; the previous checkpoints are intact. Free space or lower save_total_limit." : "";
  return new TunaError("IO", `could not save ${final}: ${errorMessage(e)}.${hint}`, { cause: e });
}

/**
 * A checkpoint that every rank of a job writes into: rank 0 prepares the temporary folder; every rank runs
 * `everyRank(tmp)` (its optimizer shard); the ranks agree that all of them succeeded; then rank 0 runs
 * `lead(tmp)` (model, trainer state, the manifest; trainer_state.json last) and renames the folder. The
 * checkpoint becomes visible only after every rank wrote its part; if any rank fails, none of it is kept and
 * every rank fails with the reason. The folder must be on a filesystem every rank sees (as with HF).
 */
export async function saveCheckpointTogether(
  outputDir: string,
  step: number,
  collective: Collective,
  parts: { everyRank: (dir: string) => Promise<void>; lead?: (dir: string) => Promise<void> },
): Promise<string> {
  const final = join(outputDir, checkpointName(step));
  const tmp = join(outputDir, `.${checkpointName(step)}.tmp-job`);
  const lead = collective.rank === 0;
  let failure: unknown;
  if (lead) {
    try {
      await rm(tmp, { recursive: true, force: true });
      await mkdir(tmp, { recursive: true });
    } catch (e) {
      failure = e;
    }
  }
  await agree(collective, failure, `rank 0 could not prepare ${tmp}`);
  try {
    if (!(await isDir(tmp))) {
      throw new TunaError("IO", `rank ${collective.rank} cannot see ${tmp}, which rank 0 made: output_dir must be on a filesystem every rank shares.`);
    }
    await parts.everyRank(tmp);
  } catch (e) {
    failure = e;
  }
  await agree(collective, failure, "a rank could not write its part of the checkpoint");
  if (lead) {
    try {
      await parts.lead?.(tmp);
      await rm(final, { recursive: true, force: true });
      await rename(tmp, final);
    } catch (e) {
      failure = e;
    }
  }
  await agree(collective, failure, `rank 0 could not finish ${final}`);
  return final;

  /**
   * All ranks learn whether any failed; the failing rank throws its own error, the others name the step. The
   * others may wait for rank 0's writing (a full model) far longer than a collective's bound: a dead rank is
   * still seen at once (its connection closes, or the heartbeat stops).
   */
  async function agree(c: Collective, own: unknown, what: string): Promise<void> {
    const flag = Float32Array.of(own === undefined ? 0 : 1);
    await c.allReduceSum(flag, { waitMs: SAVE_WAIT_MS });
    if (flag[0] === 0) return;
    if (c.rank === 0) await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    if (own !== undefined) throw saveError(final, own);
    throw new TunaError("DIST", `${what} (${final}); nothing of it was kept, the previous checkpoints are intact. See that rank's error.`);
  }
}

/** Complete checkpoint-N folders in outputDir, oldest first (by step). Temporary folders are ignored. */
export async function listCheckpoints(outputDir: string): Promise<{ step: number; dir: string }[]> {
  let names: string[];
  try {
    names = await readdir(outputDir);
  } catch {
    return [];
  }
  const found: { step: number; dir: string }[] = [];
  for (const name of names) {
    const m = CHECKPOINT_RE.exec(name);
    if (m === null) continue;
    const dir = join(outputDir, name);
    // Only folders holding trainer_state.json are complete (it is the last file written).
    if (await isFile(join(dir, TRAINER_STATE_FILE))) found.push({ step: Number(m[1]), dir });
  }
  return found.sort((a, b) => a.step - b.step);
}

/** Deletes the oldest checkpoints until at most `limit` remain (HF save_total_limit). */
export async function rotateCheckpoints(outputDir: string, limit: number | undefined): Promise<string[]> {
  if (limit === undefined || limit <= 0) return [];
  const all = await listCheckpoints(outputDir);
  const removed: string[] = [];
  for (const c of all.slice(0, Math.max(0, all.length - limit))) {
    await rm(c.dir, { recursive: true, force: true });
    removed.push(c.dir);
  }
  return removed;
}

/** `resume_from_checkpoint`: a path, or "true" for the latest checkpoint in output_dir. */
export async function resolveResumePath(value: string, outputDir: string): Promise<string> {
  if (["true", "True", "1"].includes(value)) {
    const all = await listCheckpoints(outputDir);
    const latest = all[all.length - 1];
    if (latest === undefined) {
      throw new TunaError("CONFIG_INVALID", `resume_from_checkpoint true: no complete checkpoint-N folder in ${resolve(outputDir)}.`);
    }
    return latest.dir;
  }
  const dir = resolve(value);
  if (!(await isDir(dir))) throw new TunaError("FILE_NOT_FOUND", `resume_from_checkpoint: ${dir} does not exist.`);
  if (!(await isFile(join(dir, TRAINER_STATE_FILE)))) {
    throw new TunaError("CONFIG_INVALID", `resume_from_checkpoint: ${dir} is not a checkpoint (no ${TRAINER_STATE_FILE}); give a checkpoint-N folder.`);
  }
  return dir;
}

export async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFile(path, JSON.stringify(value, null, 2) + "\n");
}

