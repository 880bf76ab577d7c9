// "Did you mean" for unknown flags and config keys: the nearest known name by edit distance.
// Used by the argv scanner and the config-file reader so both suggest the same way.

/** Levenshtein distance (insert, delete, substitute; each costs 1). */
export function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitute = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitute));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/**
 * The known name closest to `name`, or undefined when nothing is close enough to be a plausible typo: at most
 * 2 edits, 3 for names of 9 letters or more (a look-alike further away is often another option altogether:
 * use_rslora is not use_unsloth). Ties go to the earlier name in `known`.
 */
export function nearestName(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const d = editDistance(name, candidate);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  const limit = Math.max(2, Math.min(3, Math.floor(name.length / 3)));
  return bestDistance <= limit ? best : undefined;
}
