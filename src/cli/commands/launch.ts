// `tuna launch --nproc_per_node N [--nnodes M --node_rank R --master_addr A --master_port P] tuna train ...`:
// starts N processes of a command on this machine with the variables torchrun sets (RANK, WORLD_SIZE,
// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; everything else, NCCL_* included, passes
// unchanged), waits for them, and when one fails stops the others and returns its exit status.
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { GPU_JOB_DEFAULTS } from "../../dist/gpu-collective.ts";
import { packageRoot } from "../../util/package-root.ts";
import { TunaError } from "../../util/errors.ts";
import type { CliOutput } from "../output.ts";

const HELP = `usage: tuna launch --nproc_per_node N [options] <command ...>

Starts N ranks of <command> on this machine (\`tuna train ...\` runs this tuna's own CLI), with the
variables torchrun sets, so each joins the same job. When a rank fails, the others are stopped and its
exit status is returned.
  --nproc_per_node N     processes on this machine (required)
  --nnodes M             machines in the job (default 1)
  --node_rank R          this machine's index, 0..M-1 (default 0)
  --master_addr A        where rank 0 listens (default 127.0.0.1)
  --master_port P        its port (default 29500)
  --grace_seconds S      after a failure, how long the other ranks get to exit before SIGKILL (default 10)`;

interface LaunchOptions {
  nprocPerNode: number;
  nnodes: number;
  nodeRank: number;
  masterAddr: string;
  masterPort: number;
  graceSeconds: number;
  command: string[];
}

function parseLaunch(args: string[]): LaunchOptions {
  const values: Record<string, string> = {};
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") {
      i++;
      break;
    }
    if (!a.startsWith("--")) break;
    const [flag, inline] = a.slice(2).replaceAll("-", "_").split("=", 2) as [string, string | undefined];
    if (!["nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port", "grace_seconds"].includes(flag)) {
      throw new TunaError("CONFIG_UNKNOWN", `tuna launch: unknown option --${flag}.\n\n${HELP}`);
    }
    const value = inline ?? args[++i];
    if (value === undefined) throw new TunaError("CONFIG_INVALID", `tuna launch: --${flag} needs a value.`);
    values[flag] = value;
  }
  const command = args.slice(i);
  const int = (name: string, fallback: number | undefined, min: number): number => {
    const raw = values[name];
    if (raw === undefined) {
      if (fallback === undefined) throw new TunaError("CONFIG_INVALID", `tuna launch: --${name} is required.\n\n${HELP}`);
      return fallback;
    }
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < min) throw new TunaError("CONFIG_INVALID", `tuna launch: --${name} must be a whole number >= ${min}, got "${raw}".`);
    return n;
  };
  const options = {
    nprocPerNode: int("nproc_per_node", undefined, 1),
    nnodes: int("nnodes", 1, 1),
    nodeRank: int("node_rank", 0, 0),
    masterAddr: values["master_addr"] ?? "127.0.0.1",
    masterPort: int("master_port", 29500, 1),
    graceSeconds: int("grace_seconds", 10, 0),
    command,
  };
  if (options.nodeRank >= options.nnodes) throw new TunaError("CONFIG_INVALID", `tuna launch: --node_rank ${options.nodeRank} is not below --nnodes ${options.nnodes}.`);
  if (command.length === 0) throw new TunaError("CONFIG_INVALID", `tuna launch: no command to start.\n\n${HELP}`);
  return options;
}

/** `tuna ...` runs this very CLI (same Node, same bundle); anything else is started as given. */
function commandLine(command: string[]): [string, string[]] {
  if (command[0] === "tuna") return [process.execPath, [join(packageRoot(), "bin", "tuna.js"), ...command.slice(1)]];
  return [command[0]!, command.slice(1)];
}

/** Starts the ranks; `env` adds variables for every rank (e.g. CUDA_VISIBLE_DEVICES from gpu_ids). */
export async function launchCommand(args: string[], output: CliOutput, env: Record<string, string> = {}): Promise<number> {
  if (args.length === 0 || args[0] === "--help" || args[0] === "-h") {
    output.out(HELP);
    return args.length === 0 ? 2 : 0;
  }
  const o = parseLaunch(args);
  const worldSize = o.nnodes * o.nprocPerNode;
  const [program, programArgs] = commandLine(o.command);
  const children: ChildProcess[] = [];
  const exits: Promise<{ rank: number; code: number }>[] = [];
  for (let local = 0; local < o.nprocPerNode; local++) {
    const rank = o.nodeRank * o.nprocPerNode + local;
    const child = spawn(program, programArgs, {
      stdio: "inherit",
      env: {
        // NVLink multicast off unless the user set these (see src/dist/gpu-collective.ts); NCCL_* pass unchanged.
        ...GPU_JOB_DEFAULTS,
        ...process.env,
        ...env,
        RANK: String(rank),
        WORLD_SIZE: String(worldSize),
        LOCAL_RANK: String(local),
        LOCAL_WORLD_SIZE: String(o.nprocPerNode),
        GROUP_RANK: String(o.nodeRank),
        MASTER_ADDR: o.masterAddr,
        MASTER_PORT: String(o.masterPort),
      },
    });
    children.push(child);
    exits.push(
      new Promise((resolve) => {
        child.on("error", (e) => {
          output.err(`tuna launch: cannot start rank ${rank} (${program}): ${e.message}`);
          resolve({ rank, code: 127 });
        });
        child.on("exit", (code, signal) => {
          resolve({ rank, code: code ?? (signal === "SIGKILL" ? 137 : signal === "SIGTERM" ? 143 : 1) });
        });
      }),
    );
  }
  // Ctrl-C reaches the ranks through the terminal's process group: the launcher stays to collect them (they
  // finish the step, save a checkpoint together and exit); SIGTERM to the launcher is forwarded. Ranks that
  // end after a stop request are not "failed": the others are left to finish their save.
  let interrupted: NodeJS.Signals | undefined;
  const forward = (): void => {
    interrupted ??= "SIGTERM";
    for (const c of children) c.kill("SIGTERM");
  };
  const onInterrupt = (): void => {
    interrupted ??= "SIGINT";
  };
  process.on("SIGTERM", forward);
  process.on("SIGINT", onInterrupt);
  let failed: { rank: number; code: number } | undefined;
  let grace: NodeJS.Timeout | undefined;
  try {
    await Promise.all(
      exits.map((exit) =>
        exit.then((e) => {
          if (e.code === 0 || failed !== undefined) return;
          if (interrupted !== undefined && (e.code === 130 || e.code === 143)) return;
          failed = e;
          output.err(`tuna launch: rank ${e.rank} exited with status ${e.code}; stopping the other ranks.`);
          for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
          grace = setTimeout(() => {
            for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
          }, o.graceSeconds * 1000);
        }),
      ),
    );
  } finally {
    if (grace !== undefined) clearTimeout(grace);
    process.off("SIGTERM", forward);
    process.off("SIGINT", onInterrupt);
  }
  if (failed !== undefined) return failed.code;
  const codes = await Promise.all(exits);
  return codes.find((e) => e.code !== 0)?.code ?? 0;
}
