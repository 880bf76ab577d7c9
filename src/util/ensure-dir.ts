// Creating a folder and its missing parents one level at a time. Node's mkdir({ recursive: true }) spins
// forever under /proc (it retries ENOENT from a file system that refuses new entries); this stops at the
// first refusal and says which folder could not be made and why.
import { mkdir, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { TunaError, errorMessage } from "./errors.ts";

/** Makes `path` (absolute or relative) a folder, creating missing parents; IO error naming `what` on failure. */
export async function ensureDir(path: string, what: string): Promise<string> {
  const target = resolve(path);
  const missing: string[] = [];
  for (let dir = target; ; dir = dirname(dir)) {
    const info = await stat(dir).catch((e: unknown) => e as NodeJS.ErrnoException);
    if (!(info instanceof Error)) {
      if (!info.isDirectory()) throw new TunaError("IO", `cannot create ${what} ${target}: ${dir} exists and is not a folder.`);
      break;
    }
    if (info.code !== "ENOENT" || dirname(dir) === dir) throw new TunaError("IO", `cannot create ${what} ${target}: ${errorMessage(info)}.`, { cause: info });
    missing.unshift(dir);
  }
  for (const dir of missing) {
    try {
      await mkdir(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EEXIST" && (await stat(dir).catch(() => undefined))?.isDirectory() === true) continue;
      throw new TunaError("IO", `cannot create ${what} ${target}: ${errorMessage(e)}. Choose a folder you can write to.`, { cause: e });
    }
  }
  return target;
}
