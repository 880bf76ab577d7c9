// The Hugging Face cache layout on disk, shared with Python's huggingface_hub:
// <cache>/models--org--name/{blobs/<etag>, refs/<revision> -> commit, snapshots/<commit>/<file> -> ../../blobs/<etag>}.

import { copyFile, lstat, mkdir, readFile, readdir, rm, stat, symlink, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { TunaError } from "../util/errors.ts";
import { isFile } from "../util/fs-checks.ts";

const COMMIT_HASH = /^[0-9a-f]{40}$/;

export function isCommitHash(revision: string): boolean {
  return COMMIT_HASH.test(revision);
}

export function snapshotPath(storage: string, commit: string): string {
  return join(storage, "snapshots", commit);
}

export function refPath(storage: string, revision: string): string {
  return join(storage, "refs", ...checkedRepoPath(revision, `revision "${revision}"`).split("/"));
}

/**
 * A repo-relative path as the hub lists it (a file name, a revision), checked before it names anything in
 * the cache: relative, forward slashes, no empty, "." or ".." segment, no backslash or control character.
 * Hub answers are untrusted: a listing entry "../../x" must not become a link outside the cache.
 */
export function checkedRepoPath(path: unknown, what: string): string {
  const bad =
    typeof path !== "string" ||
    path === "" ||
    path.startsWith("/") ||
    /[\\\u0000-\u001f\u007f]/.test(path) ||
    /^[A-Za-z]:/.test(path) ||
    path.split("/").some((segment) => segment === "" || segment === "." || segment === "..");
  if (bad) {
    throw new TunaError(
      "HUB",
      `${what}: ${JSON.stringify(path)} is not a relative path inside the repo; refusing to use it (the hub's answer or the ` +
        `argument is malformed or hostile).`,
    );
  }
  return path;
}

// Blob names in the cache are hub ETags: a git sha1 or an LFS sha256 (hex). Nothing else may name a file.
const ETAG_NAME = /^[0-9A-Za-z][0-9A-Za-z_-]{7,127}$/;

/** The blob file name for an ETag from the hub, refused unless it is a plain hash-like name. */
export function blobName(etag: string, what: string): string {
  const name = normalizeEtag(etag);
  if (!ETAG_NAME.test(name)) {
    throw new TunaError(
      "HUB",
      `${what}: the hub sent the ETag ${JSON.stringify(etag.slice(0, 200))}, which is not a content hash; refusing to ` +
        `store the file under that name. Check HF_ENDPOINT.`,
    );
  }
  return name;
}

/** A file exists, following symlinks (a dangling snapshot link counts as missing). */

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
    else if (await isFile(full)) out.push(rel);
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
    if (await isFile(pointer)) return;
    if ((e as NodeJS.ErrnoException).code === "EPERM") {
      await copyFile(blob, pointer);
      return;
    }
    throw e;
  }
}
