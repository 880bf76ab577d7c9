// Whether a path lies inside a folder, lexically (symlinks not followed): the one containment check for
// output folders, weight indexes and merges.
import { isAbsolute, relative, sep } from "node:path";

/** True when `child` is `parent` itself or lies below it ("..name" entries count as inside). */
export function isInside(parent: string, child: string): boolean {
  const rel = relative(parent, child);
  return rel === "" || (rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}
