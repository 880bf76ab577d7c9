// Reads a JSON file with errors that name the file: missing -> FILE_NOT_FOUND, bad JSON -> FILE_FORMAT.
import { readFile } from "node:fs/promises";
import { TunaError, errorMessage } from "./errors.ts";

export async function readJsonFile(path: string, what = "file"): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new TunaError("FILE_NOT_FOUND", `${what} not found: ${path}`, { cause: e });
    throw new TunaError("FILE_FORMAT", `cannot read ${what} ${path}: ${errorMessage(e)}`, { cause: e });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new TunaError("FILE_FORMAT", `${path} is not valid JSON (${errorMessage(e)}); fix or re-download the file.`, { cause: e });
  }
}
