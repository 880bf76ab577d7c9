// push_to_hub: files of a local folder committed to a model repo through @huggingface/hub (created first if
// it does not exist; private when asked), as the Trainer's push_to_hub does. The token comes from the hub
// settings (HF_TOKEN, or the file huggingface-cli login writes) and never appears in a message.
import { openAsBlob } from "node:fs";
import { commit, createRepo, HubApiError } from "@huggingface/hub";
import { join } from "node:path";
import { TunaError, errorMessage } from "../util/errors.ts";
import { hubSettings } from "./settings.ts";

export interface PushOptions {
  /** "org/name". */
  repoId: string;
  /** The local folder and the files under it to commit (relative paths, '/' separated), at `prefix` in the repo. */
  folder: string;
  files: readonly string[];
  prefix?: string;
  private: boolean;
  title: string;
  env?: NodeJS.ProcessEnv;
}

function pushError(o: PushOptions, endpoint: string, token: string | undefined, e: unknown): TunaError {
  const raw = e instanceof HubApiError ? `HTTP ${e.statusCode}: ${e.message}` : errorMessage(e);
  // A token must never reach a message (or a log), even when an error echoes a request.
  const text = token === undefined ? raw : raw.replaceAll(token, "<token>");
  const status = e instanceof HubApiError ? e.statusCode : undefined;
  const hint =
    status === 401 || status === 403
      ? "the token is missing, invalid or cannot write there: set HF_TOKEN to a write token (or run huggingface-cli login)"
      : "check the network and HF_ENDPOINT, then push the output folder again (huggingface-cli upload)";
  return new TunaError("HUB", `push_to_hub to ${o.repoId} at ${endpoint} failed: ${text}; ${hint}.`, { cause: e });
}

/** Commits the files; returns the commit's URL. */
export async function pushFiles(o: PushOptions): Promise<string | undefined> {
  const settings = hubSettings(o.env ?? process.env);
  const token = settings.token;
  if (token === undefined) {
    throw new TunaError("HUB", `push_to_hub to ${o.repoId} needs a write token: set HF_TOKEN (or run huggingface-cli login) and run again.`);
  }
  if (!/^[\w.-]+\/[\w.-]+$/.test(o.repoId)) {
    throw new TunaError("CONFIG_INVALID", `hub_model_id ${JSON.stringify(o.repoId)} is not "namespace/name"; give the full repo id.`);
  }
  const repo = { type: "model" as const, name: o.repoId };
  try {
    await createRepo({ repo, accessToken: token, hubUrl: settings.endpoint, visibility: o.private ? "private" : "public" });
  } catch (e) {
    // An existing repo is where the run pushes to (as the Trainer's create_repo(exist_ok=True)).
    if (!(e instanceof HubApiError && e.statusCode === 409)) throw pushError(o, settings.endpoint, token, e);
  }
  try {
    const operations = await Promise.all(
      o.files.map(async (path) => ({ operation: "addOrUpdate" as const, path: `${o.prefix ?? ""}${path}`, content: await openAsBlob(join(o.folder, path)) })),
    );
    const out = await commit({ repo, accessToken: token, hubUrl: settings.endpoint, title: o.title, operations, useXet: false });
    return out?.commit.url;
  } catch (e) {
    throw pushError(o, settings.endpoint, token, e);
  }
}
