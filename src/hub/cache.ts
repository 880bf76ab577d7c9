// The Hugging Face cache layout on disk, shared with Python's huggingface_hub:
// <cache>/models--org--name/{blobs/<etag>, refs/<revision> -> commit, snapshots/<commit>/<file> -> ../../blobs/<etag>}.

import { copyFile, lstat, mkdir, readFile, readdir, rm, stat, symlink, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";

const COMMIT_HASH = /^[0-9a-f]{40}$/;

export function isCommitHash(revision: string): boolean {
  return COMMIT_HASH.test(revision);
}

export function snapshotPath(storage: string, commit: string): string {
  return join(storage, "snapshots", commit);
}

export function refPath(storage: string, revision: string): string {
  return join(storage, "refs", ...revision.split("/"));
}

/** A file exists, following symlinks (a dangling snapshot link counts as missing). */
export async function fileExists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** The cached snapshot folder for a revision (a commit hash, or a ref recorded in refs/), if present. */
export async function cachedSnapshot(storage: string, revision: string): Promise<string | undefined> {
  let commit = revision;
  if (!isCommitHash(revision)) {
    try {
      commit = (await readFile(refPath(storage, revision), "utf8")).trim();
    } catch {
      return undefined;
    }
  }
  const folder = snapshotPath(storage, commit);
  try {
    return (await stat(folder)).isDirectory() ? folder : undefined;
  } catch {
    return undefined;
  }
}

export async function writeRef(storage: string, revision: string, commit: string): Promise<void> {
  if (revision === commit) return;
  const path = refPath(storage, revision);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, commit);
}

/** Every file under a snapshot, as repo-relative paths with forward slashes. */
export async function listSnapshotFiles(folder: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(folder, { withFileTypes: true })) {
    const rel = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
    const full = join(folder, entry.name);
    if (entry.isDirectory()) out.push(...(await listSnapshotFiles(full, rel)));
    else if (await fileExists(full)) out.push(rel);
  }
  return out;
}

/** ETag as huggingface_hub stores blobs: without the weak prefix and quotes. */
export function normalizeEtag(etag: string): string {
  return etag.replace(/^W\//, "").replace(/^"+|"+$/g, "");
}

/** A temporary name unique to this writer, so concurrent processes (ranks) never share a partial file. */
export function incompletePath(blob: string): string {
  return `${blob}.${process.pid}.${Math.random().toString(36).slice(2)}.incomplete`;
}

/**
 * Point snapshots/<commit>/<file> at its blob with a relative symlink, as huggingface_hub does; where
 * symlinks are not allowed (Windows without developer mode) the blob is copied instead.
 */
export async function linkSnapshotFile(blob: string, pointer: string): Promise<void> {
  await mkdir(dirname(pointer), { recursive: true });
  try {
    await lstat(pointer);
    await rm(pointer, { force: true });
  } catch {
    // nothing there yet
  }
  try {
    await symlink(relative(dirname(pointer), blob), pointer);
  } catch (e) {
    // Another process may have linked it between our rm and symlink; that link is just as good.
    if (await fileExists(pointer)) return;
    if ((e as NodeJS.ErrnoException).code === "EPERM") {
      await copyFile(blob, pointer);
      return;
    }
    throw e;
  }
}
