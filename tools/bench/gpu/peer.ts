// The peer (transformers + PEFT, ../shared/bench/hf_baseline.py) run as a child process in the same
// benchmark run: its plan as JSON, its one JSON line per configuration parsed back.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";

export interface PeerPlanEntry {
  name: string;
  seq: number;
  mbs: number;
  gc: boolean;
  steps: number;
  warm: number;
}

export interface PeerResult {
  model: string;
  seq: number;
  mbs: number;
  gc: boolean;
  tok_s: number;
  step_s: number;
  peak_gib: number;
  tflops: number;
  loss: number;
}

export interface PeerRun {
  /** Why nothing ran (python3 or the script missing, nothing to compare), else null. */
  skipped: string | null;
  results: PeerResult[];
  /** Per-configuration failures the script reported, and a failure of the process itself. */
  errors: { plan: PeerPlanEntry | null; error: string }[];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** One stdout line of hf_baseline.py: a result, a per-plan error, or null for anything else. */
export function parsePeerLine(line: string): PeerResult | { plan: PeerPlanEntry | null; error: string } | null {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return null;
  }
  if (!isRecord(v)) return null;
  if (typeof v["error"] === "string") return { plan: isRecord(v["plan"]) ? (v["plan"] as unknown as PeerPlanEntry) : null, error: v["error"] };
  const num = (k: string): number => (typeof v[k] === "number" ? v[k] : NaN);
  if (typeof v["model"] !== "string" || typeof v["tok_s"] !== "number") return null;
  return {
    model: v["model"],
    seq: num("seq"),
    mbs: num("mbs"),
    gc: v["gc"] === true,
    tok_s: num("tok_s"),
    step_s: num("step_s"),
    peak_gib: num("peak_gib"),
    tflops: num("tflops"),
    loss: num("loss"),
  };
}

/** Runs `python3 script '<plan>'`, echoing its output lines through `log` as they come. */
/**
 * Runs the peer script with the plan; `command` builds another command line around the plan's JSON (the
 * several-GPU peer runs under torchrun: python3 -m torch.distributed.run ... peer_ddp.py PLAN hf_baseline.py).
 */
export async function runPeer(script: string, plan: readonly PeerPlanEntry[], log: (line: string) => void, command?: (planJson: string) => string[]): Promise<PeerRun> {
  if (plan.length === 0) return { skipped: "no configuration has a peer shape", results: [], errors: [] };
  if (!existsSync(script)) return { skipped: `${script} does not exist (pass --peer PATH, or --peer none)`, results: [], errors: [] };
  const results: PeerResult[] = [];
  const errors: PeerRun["errors"] = [];
  const stderrTail: string[] = [];
  const argv = command?.(JSON.stringify(plan)) ?? [script, JSON.stringify(plan)];
  const child = spawn("python3", argv, { stdio: ["ignore", "pipe", "pipe"] });
  const lines = (stream: NodeJS.ReadableStream, onLine: (line: string) => void): void => {
    let pending = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      pending += chunk;
      const parts = pending.split("\n");
      pending = parts.pop() ?? "";
      for (const p of parts) onLine(p);
    });
    stream.on("end", () => {
      if (pending !== "") onLine(pending);
    });
  };
  lines(child.stdout, (line) => {
    log(`peer: ${line}`);
    const parsed = parsePeerLine(line);
    if (parsed === null) return;
    if ("error" in parsed) errors.push(parsed);
    else results.push(parsed);
  });
  lines(child.stderr, (line) => {
    stderrTail.push(line);
    if (stderrTail.length > 20) stderrTail.shift();
  });
  const exit = await new Promise<{ code: number | null; spawnError: Error | null }>((resolve) => {
    child.on("error", (e) => {
      resolve({ code: null, spawnError: e });
    });
    child.on("close", (code) => {
      resolve({ code, spawnError: null });
    });
  });
  if (exit.spawnError !== null) {
    const missing = (exit.spawnError as NodeJS.ErrnoException).code === "ENOENT";
    return { skipped: missing ? "python3 is not on PATH" : `python3 could not be started: ${exit.spawnError.message}`, results, errors };
  }
  if (exit.code !== 0) errors.push({ plan: null, error: `python3 ${script} exited with ${exit.code}; its last stderr lines:\n${stderrTail.join("\n")}` });
  return { skipped: null, results, errors };
}

/** The peer result of the same shape, sequence length, micro-batch and checkpointing. */
export function findPeer(results: readonly PeerResult[], peerName: string | null, seq: number, mbs: number, gc: boolean): PeerResult | undefined {
  return results.find((r) => r.model === peerName && r.seq === seq && r.mbs === mbs && r.gc === gc);
}
