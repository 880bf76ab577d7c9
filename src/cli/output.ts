// Where commands write: stdout for results, stderr for progress and errors. Injected so tests capture it.

export interface CliOutput {
  out(text: string): void;
  err(text: string): void;
}

export const processOutput: CliOutput = {
  out: (text) => process.stdout.write(text.endsWith("\n") ? text : text + "\n"),
  err: (text) => process.stderr.write(text.endsWith("\n") ? text : text + "\n"),
};

/** Collects output in memory, for tests. */
export function memoryOutput(): CliOutput & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (t) => stdout.push(t), err: (t) => stderr.push(t) };
}

/**
 * A progress reporter for long file writes (merge, export): a stderr line at most every `everyMs` (and for the
 * last item), "<what> k/N <name>", so a minutes-long job shows it is moving without flooding logs.
 */
export function throttledProgress(output: CliOutput, what: string, everyMs = 2000, now: () => number = () => performance.now()): (p: { name: string; index: number; total: number }) => void {
  let last = -Infinity;
  return ({ name, index, total }) => {
    const t = now();
    if (index + 1 < total && t - last < everyMs) return;
    last = t;
    output.err(`${what}: ${index + 1}/${total} tensors (${name})`);
  };
}
