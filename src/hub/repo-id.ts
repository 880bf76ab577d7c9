// Telling local paths from hub repo ids, and validating the id form (`name` or `org/name`).
// A path-looking argument that does not exist is an error here; it is never sent to the hub.

import { existsSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, isAbsolute, resolve } from "node:path";
import { TunaError } from "../util/errors.ts";

export type RepoKind = "model" | "dataset";

// The hub's rule (huggingface_hub validate_repo_id): word characters, '-' and '.', each part starting and
// ending with a letter, digit or '_', at most 96 characters, no '--' or '..', no '.git' suffix.
const PART = "[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?";
const REPO_ID = new RegExp(`^(?:${PART}/)?${PART}$`);

export function expandHome(path: string): string {
  if (path === "~") return homedir();
  if (path.startsWith("~/") || path.startsWith("~\\")) return resolve(homedir(), path.slice(2));
  return path;
}

function isDirectory(path: string): boolean {
  return existsSync(path) && statSync(path).isDirectory();
}

/** True when the argument is written like a filesystem path rather than a hub id. */
export function looksLikePath(arg: string): boolean {
  if (arg === "." || arg === ".." || arg.startsWith("~")) return true;
  if (/^\.{1,2}[/\\]/.test(arg) || isAbsolute(arg) || /^[A-Za-z]:[/\\]/.test(arg)) return true;
  if (arg.includes("\\") || arg.split("/").length > 2 || arg.endsWith("/")) return true;
  return false;
}

/** The part of a missing path that does exist (its parent folder), for "exists partially" detection. */
function existingParent(arg: string): string | undefined {
  if (!arg.includes("/")) return undefined;
  const parent = dirname(arg);
  return parent !== "." && isDirectory(parent) ? parent : undefined;
}

/**
 * The absolute local path when `arg` names one, undefined when it should be read as a hub id.
 * Throws FILE_NOT_FOUND for path-like arguments that do not exist.
 */
export function localPathFor(arg: string, kind: RepoKind, allowFile: boolean): string | undefined {
  const path = resolve(expandHome(arg));
  if (existsSync(path)) {
    if (allowFile || statSync(path).isDirectory() || (kind === "model" && path.toLowerCase().endsWith(".gguf"))) return path;
    throw new TunaError(
      "MODEL_INVALID",
      `${arg} is a file; a ${kind} must be a folder (with config.json, tokenizer files and *.safetensors) or a hub id.`,
    );
  }
  if (looksLikePath(arg)) {
    throw new TunaError(
      "FILE_NOT_FOUND",
      `${kind} path ${arg} does not exist (resolved to ${path}); check the path, or pass a hub id like org/name.`,
    );
  }
  const parent = existingParent(arg);
  if (parent !== undefined) {
    throw new TunaError(
      "FILE_NOT_FOUND",
      `${kind} path ${arg} does not exist, but its folder ${resolve(parent)} does, so it was read as a local path ` +
        `rather than the hub id "${arg}". Fix the path; to download the hub repo, run from a folder without ./${parent}.`,
    );
  }
  return undefined;
}

export function validateRepoId(id: string, kind: RepoKind): void {
  const problem =
    id.length === 0
      ? "it is empty"
      : !REPO_ID.test(id)
        ? "use `name` or `org/name` with letters, digits, '_', '-' and '.', each part starting and ending " +
          "with a letter or digit and at most 96 characters"
        : id.includes("--") || id.includes("..")
          ? "'--' and '..' are not allowed"
          : id.endsWith(".git")
            ? "it must not end with .git"
            : undefined;
  if (problem !== undefined) {
    throw new TunaError(
      "CONFIG_INVALID",
      `"${id}" is neither an existing local ${kind} folder nor a valid hub repo id: ${problem}.`,
    );
  }
}

/** The cache folder name of a repo: models--org--name / datasets--org--name. */
export function repoFolderName(id: string, kind: RepoKind): string {
  return [`${kind}s`, ...id.split("/")].join("--");
}
