// Argument spelling shared by the commands parsed with node:util parseArgs (generate, chat, eval).

/**
 * `--max-new-tokens` and `--max_new_tokens` are the same flag; `--temperature -1` is a flag and its
 * (negative) value, not two flags (parseArgs would call "-1" an ambiguous option).
 */
export function normalizeFlags(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith("--")) {
      out.push(a);
      continue;
    }
    const flag = a.replace(/^--([^=]*)/, (_m, name: string) => `--${name.replaceAll("-", "_")}`);
    const next = args[i + 1];
    if (!flag.includes("=") && next !== undefined && /^-(\d|\.\d|inf|nan)/i.test(next)) {
      out.push(`${flag}=${next}`);
      i++;
    } else {
      out.push(flag);
    }
  }
  return out;
}
