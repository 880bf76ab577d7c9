// Argument spelling shared by the commands parsed with node:util parseArgs (generate, chat, eval), and the
// taking of a command's own flags out of arguments that go on to tuna train's parser (plan, eval).
import { TunaError } from "../util/errors.ts";

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

/**
 * Takes a command's own flags out of `args` ("--name value", "--name=value", dashes inside a name read as
 * underscores); everything else is returned in order for another parser. A bool flag takes no value.
 */
export function takeOwnFlags(args: readonly string[], own: { bools: readonly string[]; values: readonly string[] }, help: string): { rest: string[]; values: Map<string, string | true> } {
  const rest: string[] = [];
  const values = new Map<string, string | true>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const [flag, inline] = arg.split(/=(.*)/s, 2) as [string, string | undefined];
    const name = flag.replace(/^--?/, "").replaceAll("-", "_");
    if (!arg.startsWith("-") || !(own.bools.includes(name) || own.values.includes(name))) {
      rest.push(arg);
    } else if (own.bools.includes(name)) {
      values.set(name, true);
    } else if (inline !== undefined) {
      values.set(name, inline);
    } else {
      const next = args[++i];
      if (next === undefined) throw new TunaError("CONFIG_INVALID", `--${name} needs a value.\n\n${help}`);
      values.set(name, next);
    }
  }
  return { rest, values };
}
