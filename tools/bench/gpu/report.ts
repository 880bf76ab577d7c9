// What the GPU benchmark prints: a line per configuration, the step-time breakdown, the side-by-side
// comparison with the peer, a markdown table for docs/perf-log.md and the two targets.
import { HOST } from "./profile.ts";
import { benchModel } from "./models.ts";
import { findPeer, type PeerResult } from "./peer.ts";
import type { BenchResult } from "./run.ts";

const int = (x: number): string => (Number.isFinite(x) ? Math.round(x).toLocaleString("en-US") : "-");
const fixed = (x: number, digits: number): string => (Number.isFinite(x) ? x.toFixed(digits) : "-");
const gcName = (gc: boolean): string => (gc ? "on" : "off");

export function configName(r: Pick<BenchResult, "model" | "mode" | "gc" | "seq" | "mbs">): string {
  return `${r.model} ${r.mode} gc ${gcName(r.gc)} seq ${r.seq} mbs ${r.mbs}`;
}

export function resultLine(r: BenchResult): string {
  if (r.error !== undefined) return `${configName(r)}: FAILED: ${r.error}`;
  const mem = r.memory === null ? "" : `, peak ${fixed(r.memory.peakInUse, 2)} GiB in use / ${fixed(r.memory.peakReserved, 2)} GiB reserved`;
  return (
    `${configName(r)}: ${int(r.tokensPerSecond)} tokens/s (median ${fixed(r.medianStepMs, 1)} ms of ${r.steps} steps, ` +
    `${fixed(r.tflops, 1)} TFLOP/s), loss ${fixed(r.loss, 4)}${mem}`
  );
}

export function breakdownLines(r: BenchResult): string[] {
  const b = r.breakdown;
  if (b === null) return [];
  const out = [
    `  breakdown of one extra step of ${configName(r)}: every op is synchronized and timed on its own ` +
      `(CUDA events around each op on the GPU, wall clock on the CPU), so this step took ${fixed(b.stepMs, 1)} ms against a median of ${fixed(r.medianStepMs, 1)} ms`,
  ];
  for (const c of b.categories) {
    const ops = c.name === HOST ? "" : `  (${c.ops} ops)`;
    out.push(`    ${c.name.padEnd(16)} ${fixed(c.ms, 2).padStart(10)} ms  ${fixed(c.share * 100, 1).padStart(5)}%${ops}`);
  }
  const p = b.phases;
  out.push(`    phases: forward ${fixed(p.forwardMs, 1)} ms, backward ${fixed(p.backwardMs, 1)} ms, clip + AdamW ${fixed(p.optimizerMs, 1)} ms`);
  return out;
}

export interface Comparison {
  result: BenchResult;
  peer: PeerResult | undefined;
  /** tuna tokens/s over the peer's. */
  speedRatio: number;
  /** tuna peak in use over the peer's peak allocated (torch.cuda.max_memory_allocated). */
  memoryRatio: number;
}

export function compare(results: readonly BenchResult[], peer: readonly PeerResult[]): Comparison[] {
  return results.map((result) => {
    const p = findPeer(peer, benchModel(result.model).peer, result.seq, result.mbs, result.gc);
    return {
      result,
      peer: p,
      speedRatio: p === undefined ? NaN : result.tokensPerSecond / p.tok_s,
      memoryRatio: p === undefined || result.memory === null ? NaN : result.memory.peakInUse / p.peak_gib,
    };
  });
}

/** One line per configuration: tokens/s and peak memory of both sides and their ratios. */
export function summaryLines(rows: readonly Comparison[]): string[] {
  return rows.map(({ result: r, peer: p, speedRatio, memoryRatio }) => {
    const tuna = r.error === undefined ? `${int(r.tokensPerSecond)} tok/s` : "failed";
    return (
      `${configName(r).padEnd(44)} tuna ${tuna}, peer ${p === undefined ? "-" : int(p.tok_s)} tok/s, ratio ${fixed(speedRatio, 2)}; ` +
      `peak tuna ${fixed(r.memory?.peakInUse ?? NaN, 2)} GiB, peer ${fixed(p?.peak_gib ?? NaN, 2)} GiB, memory ratio ${fixed(memoryRatio, 2)}`
    );
  });
}

/** The comparison as a markdown table (also what --json's readers and docs/perf-log.md want). */
export function markdownTable(rows: readonly Comparison[]): string[] {
  const out = [
    "| model | tuna mode | gc | seq | mbs | tuna tokens/s | peer tokens/s (bf16 LoRA) | ratio | tuna peak GiB (in use / reserved) | peer peak GiB | memory ratio | tuna TFLOP/s | tuna loss |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const { result: r, peer: p, speedRatio, memoryRatio } of rows) {
    const tuna = r.error === undefined ? int(r.tokensPerSecond) : `failed: ${r.error.split("\n")[0]?.slice(0, 80) ?? ""}`;
    const mem = r.memory === null ? "-" : `${fixed(r.memory.peakInUse, 2)} / ${fixed(r.memory.peakReserved, 2)}`;
    out.push(
      `| ${r.model} | ${r.mode} | ${gcName(r.gc)} | ${r.seq} | ${r.mbs} | ${tuna} | ${p === undefined ? "-" : int(p.tok_s)} | ` +
        `${fixed(speedRatio, 2)} | ${mem} | ${p === undefined ? "-" : fixed(p.peak_gib, 2)} | ${fixed(memoryRatio, 2)} | ${fixed(r.tflops, 1)} | ${fixed(r.loss, 4)} |`,
    );
  }
  return out;
}

/**
 * The targets: (1) 7B QLoRA with checkpointing at seq 2048 at least as fast as the peer's bf16 LoRA
 * at no more than half its peak memory; (2) 7B QLoRA at seq 2048, micro-batch 1 within 8 GiB (judged on
 * the allocator's peak reserved, the memory the process actually held; the CUDA context comes on top).
 */
export function targetLines(rows: readonly Comparison[]): string[] {
  const out: string[] = [];
  const qlora7b = rows.filter((c) => c.result.model === "llama2-7b" && c.result.mode === "qlora" && c.result.seq === 2048 && c.result.error === undefined);
  const speed = qlora7b.filter((c) => c.result.gc);
  if (speed.length === 0) out.push("target 1 (7B QLoRA, gc, seq 2048 vs peer bf16 LoRA): not measured in this run");
  for (const c of speed) {
    const met = c.speedRatio >= 1 && c.memoryRatio <= 0.5;
    out.push(
      `target 1 (7B QLoRA, gc, seq 2048, mbs ${c.result.mbs}): speed ratio ${fixed(c.speedRatio, 2)} (need >= 1), ` +
        `memory ratio ${fixed(c.memoryRatio, 2)} (need <= 0.5): ${c.peer === undefined ? "no peer result" : met ? "MET" : "NOT MET"}`,
    );
  }
  const fit = qlora7b.filter((c) => c.result.mbs === 1 && c.result.memory !== null);
  if (fit.length === 0) out.push("target 2 (7B QLoRA, seq 2048, mbs 1 within 8 GiB): not measured in this run");
  for (const c of fit) {
    const m = c.result.memory!;
    out.push(
      `target 2 (7B QLoRA, gc ${gcName(c.result.gc)}, seq 2048, mbs 1): peak reserved ${fixed(m.peakReserved, 2)} GiB ` +
        `(in use ${fixed(m.peakInUse, 2)}; the CUDA context comes on top; need <= 8): ${m.peakReserved <= 8 ? "MET" : "NOT MET"}`,
    );
  }
  return out;
}
