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
