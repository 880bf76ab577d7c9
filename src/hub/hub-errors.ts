// Turning what @huggingface/hub and fetch throw into TunaError HUB messages that name the repo, the
// endpoint and the cache folder, and deciding which failures may fall back to a cached snapshot.

import { HubApiError } from "@huggingface/hub";
import { TunaError, errorMessage, isTunaError } from "../util/errors.ts";
import type { RepoKind } from "./repo-id.ts";

export interface HubContext {
  kind: RepoKind;
  id: string;
  revision: string;
  endpoint: string;
  storage: string; // the repo's folder in the cache
  tokenSource?: string;
}

export type FailureKind = "unauthorized" | "forbidden" | "not-found" | "unreachable";

export interface HubFailure {
  kind: FailureKind;
  detail: string;
}

// undici wraps socket errors as TypeError("fetch failed") with the system error as its cause.
function causeChain(e: unknown): string {
  const parts: string[] = [];
  let current: unknown = e;
  for (let depth = 0; depth < 4 && current !== undefined && current !== null; depth++) {
    const code = (current as { code?: unknown }).code;
    const message = errorMessage(current);
    parts.push(typeof code === "string" && !message.includes(code) ? `${message} (${code})` : message);
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.join(": ");
}

/** Classify a failure; auth and not-found are final, everything else means the hub could not be used. */
export function classifyFailure(e: unknown): HubFailure {
  if (e instanceof HubApiError) {
    const detail = `HTTP ${e.statusCode}: ${e.message}`; // the message ends with the URL
    if (e.statusCode === 401) return { kind: "unauthorized", detail };
    if (e.statusCode === 403) return { kind: "forbidden", detail };
    if (e.statusCode === 404) return { kind: "not-found", detail };
    return { kind: "unreachable", detail };
  }
  // WebBlob aborts its body stream with the error's message string, so a failed body arrives as a string.
  if (typeof e === "string") return { kind: "unreachable", detail: `download interrupted: ${e}` };
  return { kind: "unreachable", detail: causeChain(e) };
}

function repoName(ctx: HubContext): string {
  return `${ctx.kind} repo "${ctx.id}" (revision ${ctx.revision})`;
}

function subject(ctx: HubContext, file: string | undefined): string {
  return file === undefined ? repoName(ctx) : `file ${file} of ${repoName(ctx)}`;
}

function tokenAdvice(ctx: HubContext): string {
  return ctx.tokenSource === undefined
    ? "If it is private or gated, set HF_TOKEN to a read token from https://huggingface.co/settings/tokens " +
        "(for gated models, also accept the license on the model page)."
    : `The token from ${ctx.tokenSource} was sent; check that it is valid at https://huggingface.co/settings/tokens.`;
}

function repoPage(ctx: HubContext): string {
  return `${ctx.endpoint}/${ctx.kind === "dataset" ? "datasets/" : ""}${ctx.id}`;
}

/** The TunaError for a final failure (auth, not found) or for an unreachable hub with no usable cache. */
export function hubError(e: unknown, ctx: HubContext, file?: string): TunaError {
  if (isTunaError(e)) return e;
  const failure = classifyFailure(e);
  const what = subject(ctx, file);
  switch (failure.kind) {
    case "unauthorized":
      return new TunaError(
        "HUB",
        `the hub at ${ctx.endpoint} refused ${what} (401 Unauthorized): the repo does not exist, or it is private ` +
          `or gated and needs a token. ${tokenAdvice(ctx)} [${failure.detail}]`,
        { cause: e },
      );
    case "forbidden":
      return new TunaError(
        "HUB",
        `the hub at ${ctx.endpoint} denied access to ${what} (403 Forbidden): the model is gated or the token lacks ` +
          `access. Request access at ${repoPage(ctx)} and make sure HF_TOKEN belongs to an account that has it ` +
          `(a fine-grained token needs read access to gated repos). [${failure.detail}]`,
        { cause: e },
      );
    case "not-found":
      return new TunaError(
        "HUB",
        `no such repo or file: ${what} on ${ctx.endpoint}. Check the id and the revision, or pass a local folder. ` +
          `[${failure.detail}]`,
        { cause: e },
      );
    case "unreachable":
      return new TunaError(
        "HUB",
        `could not get ${what} from the hub at ${ctx.endpoint}: ${failure.detail}. No complete cached copy was found ` +
          `in ${ctx.storage}. Check the network and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 after fetching it once ` +
          `(or with \`huggingface-cli download ${ctx.id}\`), or pass a local folder.`,
        { cause: e },
      );
  }
}

/** Offline mode and nothing (or not enough) cached. */
export function offlineMissError(ctx: HubContext, missing: string | undefined): TunaError {
  const found =
    missing === undefined
      ? `no snapshot for revision ${ctx.revision} (looked for refs/${ctx.revision} and snapshots/<commit>)`
      : `the cached snapshot lacks ${missing}`;
  const flags =
    (ctx.kind === "dataset" ? " --repo-type dataset" : "") + (ctx.revision === "main" ? "" : ` --revision ${ctx.revision}`);
  return new TunaError(
    "HUB",
    `HF_HUB_OFFLINE is set, and ${repoName(ctx)} is not available in the cache: searched ${ctx.storage}, ${found}. ` +
      `Run once with network access (without HF_HUB_OFFLINE), or fetch it with ` +
      `\`huggingface-cli download ${ctx.id}${flags}\` into the same cache (HF_HOME / HF_HUB_CACHE), ` +
      `or pass a local folder.`,
  );
}
