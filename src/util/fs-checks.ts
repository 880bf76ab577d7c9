// Whether a path exists, is a file, or is a folder: false for anything that cannot be checked (missing, no
// permission), never an exception. One copy for every module that asks.
import { access, stat } from "node:fs/promises";

export async function pathExists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

export async function isFile(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isFile(),
    () => false,
  );
}

export async function isDir(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isDirectory(),
    () => false,
  );
}
