// The output folder of a run: refused when it holds a finished run or checkpoints (unless overwriting or
// resuming), never the base model's own folder, created at once (so a folder that cannot be made fails
// before any work), locked against a second run writing into it, and cleared of what an earlier run left.
import { readFile, readdir, rm, writeFile, unlink } from "node:fs/promises";
import { unlinkSync } from "node:fs";
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import type { TrainConfig } from "../config/index.ts";
import { ensureDir } from "../util/ensure-dir.ts";
import { isInside } from "../util/paths.ts";
import { TunaError, errorMessage } from "../util/errors.ts";
import { listCheckpoints } from "./checkpoint.ts";
import { pathExists } from "../util/fs-checks.ts";

export const LOCK_FILE = ".tuna.lock";
const FINISHED_RUN_FILES = ["adapter_config.json", "model.safetensors", "train_results.json"];
// Checkpoint folders a save was writing when its process died: .checkpoint-N.tmp-PID, or .tmp-job for a
// distributed save (whose job is over: this run holds the folder's lock).
const ORPHAN_RE = /^\.checkpoint-\d+\.tmp-(\d+|job)$/;
const CHECKPOINT_DIR_RE = /^checkpoint-\d+$/;

/** HF refuses to overwrite a finished run; so do we, unless asked or resuming. */
export async function checkOutputDir(config: TrainConfig): Promise<string> {
  const dir = resolve(config.output_dir);
  if (config.overwrite_output_dir || config.resume_from_checkpoint !== undefined) return dir;
  for (const f of FINISHED_RUN_FILES) {
    if (await pathExists(join(dir, f))) {
      throw new TunaError(
        "CONFIG_INVALID",
        `output_dir ${dir} already holds a finished run (${f}); choose another output_dir, pass --overwrite_output_dir, or --resume_from_checkpoint.`,
      );
    }
  }
  const checkpoints = await listCheckpoints(dir);
  if (checkpoints.length > 0) {
    throw new TunaError(
      "CONFIG_INVALID",
      `output_dir ${dir} holds checkpoints (${checkpoints.map((c) => `checkpoint-${c.step}`).join(", ")}); resume with --resume_from_checkpoint true, or pass --overwrite_output_dir.`,
    );
  }
  return dir;
}

/** Training into the base model's folder would overwrite or mix with its files (as merge refuses too). */
export function refuseModelFolder(outputDir: string, modelDir: string): void {
  if (isInside(resolve(modelDir), resolve(outputDir))) {
    throw new TunaError(
      "CONFIG_INVALID",
      `output_dir ${outputDir} is the base model's folder ${modelDir} (or inside it); the adapter, tokenizer and checkpoints ` +
        "would be written among the model's files. Choose another output_dir.",
    );
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

interface LockOwner {
  pid: number;
  host: string;
  started: string;
}

export interface OutputDirLock {
  release(): void;
}

/**
 * Creates the folder and takes its lock: a second run into the same folder (two launches, two torchrun
 * jobs) is refused instead of interleaving files. A lock left by a dead process on this host is taken over.
 */
export async function lockOutputDir(outputDir: string): Promise<OutputDirLock> {
  await ensureDir(outputDir, "output_dir");
  const path = join(outputDir, LOCK_FILE);
  const me: LockOwner = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
  for (let attempt = 0; ; attempt++) {
    try {
      await writeFile(path, `${JSON.stringify(me)}\n`, { flag: "wx" });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") {
        throw new TunaError("IO", `cannot write to output_dir ${outputDir}: ${errorMessage(e)}. Choose a folder you can write to.`, { cause: e });
      }
    }
    const owner: Partial<LockOwner> = await readFile(path, "utf8").then((t) => JSON.parse(t) as Partial<LockOwner>, () => ({}));
    const stale = owner.host === me.host && typeof owner.pid === "number" && !processAlive(owner.pid);
    if (!stale || attempt > 0) {
      throw new TunaError(
        "CONFIG_INVALID",
        `output_dir ${outputDir} is in use by another tuna run (pid ${String(owner.pid)} on ${String(owner.host)}, started ` +
          `${String(owner.started)}); wait for it to finish or choose another output_dir. If no such run exists, delete ${path}.`,
      );
    }
    await unlink(path).catch(() => undefined);
  }
  let held = true;
  const release = (): void => {
    if (!held) return;
    held = false;
    process.off("exit", release);
    try {
      unlinkSync(path);
    } catch {
      // already gone
    }
  };
  process.on("exit", release);
  return { release };
}

/**
 * What earlier runs left that this one must not pick up: checkpoint folders whose save was cut off (their
 * process is gone), and with --overwrite_output_dir the previous run's checkpoints, so that a later
 * --resume_from_checkpoint true cannot resume the old run. Returns what was removed.
 */
export async function clearPreviousRun(outputDir: string, overwrite: boolean): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(outputDir)) {
    const orphan = ORPHAN_RE.exec(name);
    const old = overwrite && CHECKPOINT_DIR_RE.test(name);
    if ((orphan !== null && (orphan[1] === "job" || !processAlive(Number(orphan[1])))) || old) {
      await rm(join(outputDir, name), { recursive: true, force: true });
      removed.push(name);
    }
  }
  return removed;
}
