// Turns Node file-system errors met while reading or writing safetensors files into TunaErrors,
// and the small positional read/write loops that never assume one syscall moves every byte.
import type { FileHandle } from "node:fs/promises";
import { TunaError, errorMessage } from "../../util/errors.ts";

/** Linux refuses single reads/writes above ~2 GiB; larger tensors go in chunks of this size. */
const MAX_IO_BYTES = 1 << 30;

function errnoCode(e: unknown): string | undefined {
  if (typeof e === "object" && e !== null && "code" in e && typeof e.code === "string") return e.code;
  return undefined;
}

/** `action` completes "could not ...", e.g. "open it for reading". */
export function fsError(path: string, action: string, e: unknown): TunaError {
  const code = errnoCode(e);
  if (code === "ENOENT" || code === "ENOTDIR") {
    return new TunaError("FILE_NOT_FOUND", `${path} does not exist (could not ${action}); check the path.`, { cause: e });
  }
  if (code === "EACCES" || code === "EPERM" || code === "EISDIR") {
    return new TunaError("FILE_NOT_FOUND", `could not ${action} ${path}: ${errorMessage(e)}; check the path and its permissions.`, {
      cause: e,
    });
  }
  const hint = code === "ENOSPC" ? "; the disk is full: free space or choose another output folder" : "";
  return new TunaError("IO", `could not ${action} ${path}: ${errorMessage(e)}${hint}`, { cause: e });
}

/** Reads exactly into `target` from `position`; returns the number of bytes read (less at end of file). */
export async function readFully(handle: FileHandle, target: Uint8Array, position: number): Promise<number> {
  let done = 0;
  while (done < target.length) {
    const length = Math.min(target.length - done, MAX_IO_BYTES);
    const { bytesRead } = await handle.read(target, done, length, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** Writes all of `data` at `position`. */
export async function writeFully(handle: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const length = Math.min(data.length - done, MAX_IO_BYTES);
    const { bytesWritten } = await handle.write(data, done, length, position + done);
    if (bytesWritten === 0) throw new Error(`write returned 0 bytes at position ${position + done}`);
    done += bytesWritten;
  }
}
