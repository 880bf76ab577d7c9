// Finds tuna's own folder (the one whose package.json names "tuna") from a module URL, so shipped
// files such as examples/ resolve the same from the sources and from the dist/ bundle.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { TunaError } from "./errors.ts";

export function packageRoot(moduleUrl: string = import.meta.url): string {
  let dir = dirname(fileURLToPath(moduleUrl));
  for (;;) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, "utf8")) as { name?: string }).name === "tuna") return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new TunaError("INTERNAL", `cannot find tuna's package folder above ${fileURLToPath(moduleUrl)}`);
    dir = parent;
  }
}
