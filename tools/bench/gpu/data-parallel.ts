// `--nproc N`: the same (model, mode) measured on N ranks (one GPU each; on the CPU, N processes) that all-reduce
// their gradients every step as tuna's DDP does, next to the 1-GPU run of the same call. The parent starts the
// ranks with torchrun's variables; each joins the job through tuna's rendezvous (NCCL on GPUs, the host
// transport on the CPU); rank 0 prints its results as JSON lines the parent reads.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { GPU_JOB_DEFAULTS, collectiveForBackend } from "../../../src/dist/gpu-collective.ts";
import { joinJob } from "../../../src/dist/job.ts";
import { processPlace } from "../../../src/dist/launch-env.ts";
import { errorMessage } from "../../../src/util/errors.ts";
import { openBenchDevice, type BenchDeviceKind } from "./device.ts";
import { runBenchGroup, type BenchResult, type GroupOptions } from "./run.ts";
import type { SyntheticPools } from "./synthetic-weights.ts";

const RESULT_PREFIX = "TUNA-DP-RESULT ";

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  await new Promise((r) => server.close(r));
  return port;
}

/** Starts `nproc` ranks of this benchmark (`args` + --worker) and returns rank 0's results. */
export async function runDataParallelGroup(script: string, args: readonly string[], nproc: number, log: (line: string) => void): Promise<BenchResult[]> {
  const port = await freePort();
  const results: BenchResult[] = [];
  const exits = Array.from({ length: nproc }, (_, rank) => {
    const child = spawn(process.execPath, [...process.execArgv, script, ...args, "--worker"], {
      env: { ...GPU_JOB_DEFAULTS, ...process.env, RANK: String(rank), WORLD_SIZE: String(nproc), LOCAL_RANK: String(rank), LOCAL_WORLD_SIZE: String(nproc), MASTER_ADDR: "127.0.0.1", MASTER_PORT: String(port) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let buffered = "";
    child.stdout.on("data", (d: Buffer) => {
      buffered += d.toString();
      for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.startsWith(RESULT_PREFIX)) results.push(JSON.parse(line.slice(RESULT_PREFIX.length)) as BenchResult);
        else if (rank === 0) log(`  [rank 0] ${line}`);
      }
    });
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    return new Promise<void>((resolve) => {
      child.on("exit", (code) => {
        if (code !== 0) log(`  rank ${rank} exited with ${code}: ${err.trim().split("\n").slice(-3).join(" | ")}`);
        resolve();
      });
    });
  });
  await Promise.all(exits);
  return results;
}

/** What a rank started by runDataParallelGroup runs: join the job, measure with the collective, report on rank 0. */
export async function dataParallelWorker(kind: BenchDeviceKind, pools: SyntheticPools, options: Omit<GroupOptions, "collective">, threads: number | undefined): Promise<number> {
  const place = processPlace();
  const job = await joinJob(place, { timeoutMs: 600_000, identity: { bench: JSON.stringify(options.configJson) } });
  let ok = false;
  try {
    const device = openBenchDevice(kind, threads, place.localRank);
    try {
      const collective = await collectiveForBackend(job, place, device.backend, 600_000);
      const results = await runBenchGroup(device, pools, { ...options, collective, profile: false }, (line) => {
        if (place.rank === 0) console.log(line);
      });
      if (place.rank === 0) for (const r of results) console.log(`${RESULT_PREFIX}${JSON.stringify(r, (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? null : v))}`);
      ok = results.every((r) => r.error === undefined);
    } finally {
      device.dispose();
    }
    await job.leave();
  } catch (e) {
    console.error(`rank ${place.rank}: ${errorMessage(e)}`);
    await job.close();
    return 1;
  }
  return ok ? 0 : 1;
}

/** tokens/s per GPU, scaling efficiency against the 1-GPU run of the same call, and the communication share. */
export function scalingLines(single: readonly BenchResult[], parallel: readonly BenchResult[]): string[] {
  return parallel.map((p) => {
    const one = single.find((s) => s.model === p.model && s.mode === p.mode && s.gc === p.gc && s.seq === p.seq && s.mbs === p.mbs);
    const perGpu = p.tokensPerSecond / p.worldSize;
    const efficiency = one === undefined || !(one.tokensPerSecond > 0) ? NaN : perGpu / one.tokensPerSecond;
    const name = `${p.model} ${p.mode} gc ${p.gc ? "on" : "off"} seq ${p.seq} mbs ${p.mbs}`;
    if (p.error !== undefined) return `${name} on ${p.worldSize} ranks: failed: ${p.error}`;
    return (
      `${name} on ${p.worldSize} ranks: ${Math.round(p.tokensPerSecond)} tokens/s in all, ${Math.round(perGpu)} per rank; ` +
      `scaling efficiency ${Number.isFinite(efficiency) ? `${(efficiency * 100).toFixed(1)}%` : "n/a"} of 1 rank (${one === undefined ? "not measured" : Math.round(one.tokensPerSecond)} tokens/s); ` +
      `gradient all-reduce ${p.commShare === null ? "n/a" : `${(p.commShare * 100).toFixed(1)}%`} of the step`
    );
  });
}
