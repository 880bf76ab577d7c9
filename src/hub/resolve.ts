// Turning a model or dataset argument into a local folder: an existing path as is, or a hub repo id
// resolved into the standard HF cache (download when online, cache only when HF_HUB_OFFLINE, cache fallback).

import { datasetInfo, listFiles, modelInfo } from "@huggingface/hub";
import { join } from "node:path";
import { TunaError } from "../util/errors.ts";
import { safeText } from "../util/safe-text.ts";
import { cachedSnapshot, checkedRepoPath, isCommitHash, listSnapshotFiles, snapshotPath, writeRef } from "./cache.ts";
import { fetchFileToCache, repoDesignation } from "./fetch-file.ts";
import type { HubCall } from "./fetch-file.ts";
import { classifyFailure, hubError, offlineMissError } from "./hub-errors.ts";
import type { HubContext } from "./hub-errors.ts";
import { missingModelFile, planModelFiles, readShardNames } from "./model-files.ts";
import { localPathFor, repoFolderName, validateRepoId } from "./repo-id.ts";
import type { RepoKind } from "./repo-id.ts";
import { checkTokenForm, hubSettings } from "./settings.ts";
import { isFile } from "../util/fs-checks.ts";

export interface ResolveOptions {
  /** Branch, tag or commit hash; default "main". */
  revision?: string;
  /** Fetch exactly these repo files (each required) instead of the default set, e.g. for adapter repos. */
  files?: string[];
  /**
   * Datasets: the data files to fetch out of the repo's file list (the data layer's split detection);
   * none chosen is an error. Default: every *.parquet file.
   */
  selectDataFiles?: (repoFiles: string[]) => string[];
  /** Environment to read HF_* variables from; default process.env. */
  env?: NodeJS.ProcessEnv;
  fetch?: typeof fetch;
  /** Told when the hub could not be reached and a cached snapshot is used instead. */
  onNotice?: (message: string) => void;
  /** Told before each file that is actually downloaded (not already cached). */
  onDownload?: (file: { path: string; bytes: number }) => void;
}

interface RepoPlan {
  /** The commit a revision points at and the repo's file paths. */
  lookup(call: HubCall, revision: string): Promise<{ commit: string; files: string[] }>;
  /** Fetch what is needed into snapshots/<commit>. */
  download(call: HubCall, commit: string, repoFiles: Set<string>): Promise<void>;
  /** The first thing a cached snapshot lacks, or undefined when it is usable. */
  missing(folder: string): Promise<string | undefined>;
}

/** A model folder: the local path when `idOrPath` is one, else the cached snapshot of the hub repo. */
export async function resolveModelPath(idOrPath: string, opts: ResolveOptions = {}): Promise<string> {
  const local = localPathFor(idOrPath, "model", false);
  return local ?? resolveRepo("model", idOrPath, opts, modelPlan(idOrPath, opts.files));
}

/** A dataset file or folder: the local path when `idOrPath` is one, else the cached snapshot of the hub repo. */
export async function resolveDatasetPath(idOrPath: string, opts: ResolveOptions = {}): Promise<string> {
  const local = localPathFor(idOrPath, "dataset", true);
  return local ?? resolveRepo("dataset", idOrPath, opts, datasetPlan(idOrPath, opts.files, opts.selectDataFiles ?? parquetFiles));
}

// Run one hub step; failures become TunaError HUB naming the file, with the original error as cause.
async function step<T>(ctx: HubContext, file: string | undefined, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (e) {
    throw hubError(e, ctx, file);
  }
}

// Only a hub that could not be used (network, 5xx, broken transfer) may fall back to the cache; 401/403/404
// and problems with the repo's content are final, like in transformers.
function isUnreachable(e: unknown): boolean {
  if (e instanceof TunaError) return e.code === "HUB" && e.cause !== undefined && isUnreachable(e.cause);
  return classifyFailure(e).kind === "unreachable";
}

function rootDetail(e: unknown): string {
  return e instanceof TunaError && e.cause !== undefined ? rootDetail(e.cause) : classifyFailure(e).detail;
}

async function resolveRepo(kind: RepoKind, id: string, opts: ResolveOptions, plan: RepoPlan): Promise<string> {
  validateRepoId(id, kind);
  if (opts.revision !== undefined) checkedRepoPath(opts.revision, `${kind} "${id}", revision`);
  const settings = hubSettings(opts.env ?? process.env);
  const revision = opts.revision ?? "main";
  const storage = join(settings.cacheDir, repoFolderName(id, kind));
  const ctx: HubContext = { kind, id, revision, endpoint: settings.endpoint, storage };
  if (settings.tokenSource !== undefined) ctx.tokenSource = settings.tokenSource;

  if (settings.offline) {
    const cached = await cachedSnapshot(storage, revision);
    const gap = cached === undefined ? undefined : await plan.missing(cached);
    if (cached === undefined || gap !== undefined) throw offlineMissError(ctx, gap);
    return cached;
  }
  // A complete snapshot usable without the hub; a damaged one (e.g. a broken index) just does not count.
  const usableCache = async (): Promise<string | undefined> => {
    const cached = await cachedSnapshot(storage, revision);
    if (cached === undefined) return undefined;
    return (await plan.missing(cached).catch(() => "unreadable")) === undefined ? cached : undefined;
  };
  // A commit is immutable: once its snapshot is complete there is nothing to ask the hub.
  if (isCommitHash(revision)) {
    const cached = await usableCache();
    if (cached !== undefined) return cached;
  }

  checkTokenForm(settings);
  const call: HubCall = { ctx, hubUrl: settings.endpoint };
  if (settings.token !== undefined) call.accessToken = settings.token as `hf_${string}`;
  if (opts.fetch !== undefined) call.fetch = opts.fetch;
  if (opts.onDownload !== undefined) call.onDownload = opts.onDownload;
  try {
    const { commit, files } = await step(ctx, undefined, () => plan.lookup(call, revision));
    if (typeof commit !== "string" || !isCommitHash(commit)) {
      throw new TunaError(
        "HUB",
        `the hub at ${settings.endpoint} gave no commit hash for ${kind} repo "${id}" (revision ${revision}).`,
      );
    }
    await plan.download(call, commit, new Set(files));
    // The ref moves only once the snapshot is complete, so a failed update leaves the old snapshot usable.
    await writeRef(storage, revision, commit);
    return snapshotPath(storage, commit);
  } catch (e) {
    if (!isUnreachable(e)) throw hubError(e, ctx);
    const fallback = await usableCache();
    if (fallback === undefined) throw hubError(e, ctx);
    opts.onNotice?.(
      safeText(
        `could not reach the hub at ${settings.endpoint} (${rootDetail(e)}); ` +
          `using the cached snapshot of ${kind} "${id}" (revision ${revision}) at ${fallback}.`,
      ),
    );
    return fallback;
  }
}

function credentials(call: HubCall): { hubUrl: string; accessToken?: `hf_${string}`; fetch?: typeof fetch } {
  return {
    hubUrl: call.hubUrl,
    ...(call.accessToken === undefined ? {} : { accessToken: call.accessToken }),
    ...(call.fetch === undefined ? {} : { fetch: call.fetch }),
  };
}

async function fetchAll(call: HubCall, commit: string, repoFiles: Set<string>, files: string[]): Promise<void> {
  for (const file of files) {
    if (!repoFiles.has(file)) {
      throw new TunaError(
        "HUB",
        `no such repo or file: ${file} is not in ${call.ctx.kind} repo "${call.ctx.id}" at commit ${commit} ` +
          `on ${call.ctx.endpoint}.`,
      );
    }
    await step(call.ctx, file, () => fetchFileToCache(call, commit, file));
  }
}

function modelPlan(id: string, explicitFiles: string[] | undefined): RepoPlan {
  return {
    async lookup(call, revision) {
      const info = await modelInfo({ name: id, revision, additionalFields: ["sha", "filePaths"], ...credentials(call) });
      return { commit: info.sha, files: info.filePaths.map((f) => checkedRepoPath(f, `model repo "${id}", file listing`)) };
    },
    async download(call, commit, repoFiles) {
      if (explicitFiles !== undefined) return fetchAll(call, commit, repoFiles, explicitFiles);
      const plan = planModelFiles(id, repoFiles);
      await fetchAll(call, commit, repoFiles, plan.files);
      if (plan.index === undefined) return;
      const shards = await readShardNames(join(snapshotPath(call.ctx.storage, commit), plan.index));
      await fetchAll(call, commit, repoFiles, shards);
    },
    missing: (folder) => missingModelFile(folder, explicitFiles),
  };
}

const DATASET_METADATA = ["README.md", "dataset_infos.json", "dataset_info.json"];

const parquetFiles = (repoFiles: string[]): string[] => repoFiles.filter((f) => f.endsWith(".parquet"));

function datasetPlan(id: string, explicitFiles: string[] | undefined, selectDataFiles: (repoFiles: string[]) => string[]): RepoPlan {
  return {
    async lookup(call, revision) {
      const info = await datasetInfo({ name: id, revision, additionalFields: ["sha"], ...credentials(call) });
      const files: string[] = [];
      const listing = listFiles({ repo: repoDesignation(call.ctx), revision: info.sha, recursive: true, ...credentials(call) });
      for await (const entry of listing) if (entry.type === "file") files.push(checkedRepoPath(entry.path, `dataset repo "${id}", file listing`));
      return { commit: info.sha, files };
    },
    async download(call, commit, repoFiles) {
      if (explicitFiles !== undefined) return fetchAll(call, commit, repoFiles, explicitFiles);
      const data = [...new Set(selectDataFiles([...repoFiles].sort()))].sort();
      if (data.length === 0) {
        throw new TunaError(
          "HUB",
          `dataset repo "${id}" has no data files tuna reads (*.jsonl, *.json, *.csv, *.parquet, *.arrow) at revision ` +
            `${call.ctx.revision}; the hub keeps a parquet conversion of most datasets on the revision ` +
            `"refs/convert/parquet", try that revision.`,
        );
      }
      const metadata = DATASET_METADATA.filter((f) => repoFiles.has(f));
      await fetchAll(call, commit, repoFiles, [...metadata, ...data]);
    },
    async missing(folder) {
      if (explicitFiles !== undefined) {
        for (const file of explicitFiles) if (!(await isFile(join(folder, file)))) return file;
        return undefined;
      }
      return selectDataFiles(await listSnapshotFiles(folder)).length > 0 ? undefined : "data files (*.jsonl, *.json, *.csv, *.parquet, *.arrow)";
    },
  };
}
