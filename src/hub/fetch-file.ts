// Downloading one repo file into the cache layout: ask the hub for its size and etag, stream it to a
// private temporary file, check the size, rename into blobs/ and link it from snapshots/<commit>/.
//
// Why not @huggingface/hub's downloadFileToCacheDir: it prints (console.debug on every download, so a CLI's
// stdout or JSON output would be polluted), it files a branch download under each file's last commit rather
// than the repo commit and writes no refs/, it makes an extra paths-info request per file, and two ranks
// downloading the same model would share one `.incomplete` file. We still use the library for the parts that
// carry the protocol: fileDownloadInfo (etag, size, redirects, xet) and downloadFile (the body, LFS or xet).

import { downloadFile, fileDownloadInfo } from "@huggingface/hub";
import { createWriteStream } from "node:fs";
import { mkdir, rm, rename, stat } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";
import { TunaError } from "../util/errors.ts";
import { blobName, checkedRepoPath, incompletePath, linkSnapshotFile, snapshotPath } from "./cache.ts";
import { hubError } from "./hub-errors.ts";
import type { HubContext } from "./hub-errors.ts";
import { isFile } from "../util/fs-checks.ts";

export interface HubCall {
  ctx: HubContext;
  hubUrl: string;
  accessToken?: `hf_${string}`;
  fetch?: typeof fetch;
  onDownload?: (file: { path: string; bytes: number }) => void;
}

export function repoDesignation(ctx: HubContext): { type: "model" | "dataset"; name: string } {
  return { type: ctx.kind, name: ctx.id };
}

/** Ensure snapshots/<commit>/<path> exists in the cache; returns its path. Auth and 404 become TunaError HUB. */
export async function fetchFileToCache(call: HubCall, commit: string, path: string): Promise<string> {
  const what = `${call.ctx.kind} repo "${call.ctx.id}"`;
  const pointer = join(snapshotPath(call.ctx.storage, commit), ...checkedRepoPath(path, `${what}, file`).split("/"));
  if (await isFile(pointer)) return pointer;

  const params = {
    repo: repoDesignation(call.ctx),
    path,
    revision: commit,
    hubUrl: call.hubUrl,
    ...(call.accessToken === undefined ? {} : { accessToken: call.accessToken }),
    ...(call.fetch === undefined ? {} : { fetch: call.fetch }),
  };
  const info = await fileDownloadInfo(params);
  if (info === null) {
    throw new TunaError(
      "HUB",
      `no such repo or file: ${path} is not in ${call.ctx.kind} repo "${call.ctx.id}" at commit ${commit} ` +
        `on ${call.ctx.endpoint}.`,
    );
  }
  const blob = join(call.ctx.storage, "blobs", blobName(info.etag, `${what}, file ${path}`));
  const cached = await stat(blob).catch(() => undefined);
  if (cached?.size !== info.size) {
    await mkdir(join(call.ctx.storage, "blobs"), { recursive: true });
    call.onDownload?.({ path, bytes: info.size });
    const body = await downloadFile({ ...params, downloadInfo: info });
    if (body === null) throw hubError(new Error(`the hub returned no content for ${path}`), call.ctx, path);
    const partial = incompletePath(blob);
    try {
      await pipeline(Readable.fromWeb(body.stream() as NodeReadableStream<Uint8Array>), createWriteStream(partial));
      const got = (await stat(partial)).size;
      if (got !== info.size) {
        // A plain Error: the caller treats a broken transfer like an unreachable hub (cache fallback allowed).
        throw new Error(`the download ended after ${got} of ${info.size} bytes; run again to retry`);
      }
      await rename(partial, blob);
    } finally {
      await rm(partial, { force: true });
    }
  }
  await linkSnapshotFile(blob, pointer);
  return pointer;
}
