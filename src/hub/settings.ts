// Hub settings from the environment, with the same variables and precedence as Python's huggingface_hub:
// endpoint, token, offline switch and cache folder. Reads an explicit env so tests never touch process.env.

import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { TunaError } from "../util/errors.ts";

export const DEFAULT_ENDPOINT = "https://huggingface.co";

export interface HubSettings {
  endpoint: string; // base URL without a trailing slash
  token?: string;
  tokenSource?: string; // where the token came from, for error messages
  offline: boolean;
  cacheDir: string; // the hub cache root that holds models--org--name folders
}

// huggingface_hub treats these spellings as true (constants._is_true).
function isTrue(value: string | undefined): boolean {
  return value !== undefined && ["1", "on", "yes", "true"].includes(value.trim().toLowerCase());
}

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed === undefined || trimmed === "" ? undefined : trimmed;
}

/** HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
export function hfHome(env: NodeJS.ProcessEnv): string {
  return (
    nonEmpty(env.HF_HOME) ?? join(nonEmpty(env.XDG_CACHE_HOME) ?? join(homedir(), ".cache"), "huggingface")
  );
}

/** HF_HUB_CACHE, else the legacy HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub. */
export function hubCacheDir(env: NodeJS.ProcessEnv): string {
  return nonEmpty(env.HF_HUB_CACHE) ?? nonEmpty(env.HUGGINGFACE_HUB_CACHE) ?? join(hfHome(env), "hub");
}

// `huggingface-cli login` writes the token to $HF_HOME/token; HF_TOKEN_PATH overrides that location.
function tokenFromFile(env: NodeJS.ProcessEnv): { token: string; source: string } | undefined {
  const path = nonEmpty(env.HF_TOKEN_PATH) ?? join(hfHome(env), "token");
  if (!existsSync(path)) return undefined;
  const token = nonEmpty(readFileSync(path, "utf8"));
  return token === undefined ? undefined : { token, source: path };
}

export function hubSettings(env: NodeJS.ProcessEnv): HubSettings {
  const endpoint = (nonEmpty(env.HF_ENDPOINT) ?? DEFAULT_ENDPOINT).replace(/\/+$/, "");
  if (!/^https?:\/\/[^/]/.test(endpoint)) {
    throw new TunaError(
      "CONFIG_INVALID",
      `HF_ENDPOINT=${endpoint} is not an http(s) URL; set it to a base URL such as ${DEFAULT_ENDPOINT} or unset it.`,
    );
  }
  const offline = isTrue(env.HF_HUB_OFFLINE) || isTrue(env.TRANSFORMERS_OFFLINE);
  const cacheDir = hubCacheDir(env);
  const fromEnv = nonEmpty(env.HF_TOKEN)
    ? { token: nonEmpty(env.HF_TOKEN)!, source: "HF_TOKEN" }
    : nonEmpty(env.HUGGING_FACE_HUB_TOKEN)
      ? { token: nonEmpty(env.HUGGING_FACE_HUB_TOKEN)!, source: "HUGGING_FACE_HUB_TOKEN" }
      : undefined;
  const found = fromEnv ?? (offline ? undefined : tokenFromFile(env));
  if (found === undefined) return { endpoint, offline, cacheDir };
  return { endpoint, offline, cacheDir, token: found.token, tokenSource: found.source };
}

/** @huggingface/hub rejects tokens without the hf_ prefix with a bare TypeError; say which setting is wrong. */
export function checkTokenForm(settings: HubSettings): void {
  if (settings.token !== undefined && !settings.token.startsWith("hf_")) {
    throw new TunaError(
      "CONFIG_INVALID",
      `the Hugging Face token from ${settings.tokenSource ?? "the environment"} does not start with "hf_"; ` +
        `copy a user access token from https://huggingface.co/settings/tokens, or unset it for public repos.`,
    );
  }
}
