// Runs a tuna command in-process with captured output, as the CLI tests need it: exit code, stdout, stderr.
import { main } from "../../src/cli/main.ts";
import { memoryOutput } from "../../src/cli/output.ts";

export interface CliRun {
  code: number;
  out: string;
  err: string;
}

export async function runCli(args: string[]): Promise<CliRun> {
  const o = memoryOutput();
  const code = await main(args, o);
  return { code, out: o.stdout.join("\n"), err: o.stderr.join("\n") };
}

/** runCli with `env` set in process.env for the call (the CLI reads HF_*, RANK... from there), then put back. */
export async function runCliWithEnv(args: string[], env: Record<string, string>): Promise<CliRun> {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    return await runCli(args);
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) Reflect.deleteProperty(process.env, k);
      else process.env[k] = v;
    }
  }
}
