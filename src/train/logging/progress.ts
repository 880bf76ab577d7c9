// The training progress display: on a terminal one line redrawn with \r (step/total, bar, loss, lr,
// grad norm, tokens/s, elapsed<ETA); elsewhere (CI logs, files) one plain line per log event.
// Hand-written rather than cli-progress: ~120 lines of logic that tests drive with a fake stream and a fake
// clock, no dependency, and the non-TTY mode (which cli-progress leaves to the caller) is the same code.
import type { LogEntry } from "./log-entry.ts";

/** Where the display writes: process.stderr, or a fake in tests. `columns` bounds the line on a TTY. */
export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  totalSteps: number;
  /** Milliseconds clock; Date.now by default. */
  now?: () => number;
  /** Redraw the TTY line at most this often (the last step is always drawn). */
  minRedrawMs?: number;
}

/** What the trainer knows after an optimizer step; the metrics are shown as of their last report. */
export interface StepProgress {
  step: number;
  loss?: number;
  learningRate?: number;
  gradNorm?: number;
  tokensPerSecond?: number;
}

export interface ProgressDisplay {
  /** After each optimizer step: redraws the line on a TTY (throttled); nothing otherwise. */
  update(progress: StepProgress): void;
  /** At each log event: a plain line when not a TTY; on a TTY a line above the bar (whose values it updates). */
  log(entry: LogEntry): void;
  /** Ends the TTY line so later output starts on a fresh line. */
  finish(): void;
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "?";
  const total = Math.round(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  return `${h}:${String(m).padStart(2, "0")}:${String(s).padStart(2, "0")}`;
}

const FORMATS: Record<string, (v: number) => string> = {
  epoch: (v) => v.toFixed(2),
  loss: (v) => v.toFixed(4),
  eval_loss: (v) => v.toFixed(4),
  learning_rate: (v) => v.toExponential(2),
  grad_norm: (v) => v.toFixed(3),
  tokens_per_second: (v) => v.toFixed(0),
  eval_perplexity: (v) => v.toFixed(2),
  peak_memory_gib: (v) => v.toFixed(2),
};
const ORDER = ["epoch", "loss", "learning_rate", "grad_norm", "tokens_per_second"];

function formatEntryValues(entry: LogEntry): string[] {
  const keys = [...ORDER.filter((k) => k in entry), ...Object.keys(entry).filter((k) => k !== "step" && !ORDER.includes(k))];
  return keys.flatMap((k) => {
    const v = entry[k];
    if (v === undefined) return [];
    const text = typeof v === "number" && Number.isFinite(v) ? (FORMATS[k] ?? ((x: number): string => String(Number(x.toPrecision(6)))))(v) : String(v);
    return [`${k} ${text}`];
  });
}

export function createProgressDisplay(stream: ProgressStream, options: ProgressOptions): ProgressDisplay {
  const now = options.now ?? Date.now;
  const minRedrawMs = options.minRedrawMs ?? 100;
  const total = options.totalSteps;
  const tty = stream.isTTY === true;
  let start: { ms: number; step: number } | undefined;
  let latest: StepProgress = { step: 0 };
  let lastDrawMs = Number.NEGATIVE_INFINITY;
  let drawnWidth = 0;

  const timing = (step: number): { elapsed: string; eta: string } => {
    const t = now();
    if (start === undefined) return { elapsed: formatDuration(0), eta: "?" };
    const done = step - start.step;
    const elapsedMs = t - start.ms;
    const etaMs = done > 0 ? ((total - step) * elapsedMs) / done : Number.NaN;
    return { elapsed: formatDuration(elapsedMs), eta: formatDuration(etaMs) };
  };

  const barLine = (): string => {
    const p = latest;
    const fraction = total > 0 ? Math.min(1, Math.max(0, p.step / total)) : 0;
    const width = 20;
    const filled = Math.round(fraction * width);
    const { elapsed, eta } = timing(p.step);
    const parts = [`${String(p.step).padStart(String(total).length)}/${total} [${"█".repeat(filled)}${"·".repeat(width - filled)}] ${Math.floor(fraction * 100)}%`];
    if (p.loss !== undefined) parts.push(`loss ${p.loss.toFixed(4)}`);
    if (p.learningRate !== undefined) parts.push(`lr ${p.learningRate.toExponential(2)}`);
    if (p.gradNorm !== undefined) parts.push(`gnorm ${p.gradNorm.toFixed(3)}`);
    if (p.tokensPerSecond !== undefined) parts.push(`${p.tokensPerSecond.toFixed(0)} tok/s`);
    parts.push(`${elapsed}<${eta}`);
    const line = parts.join(" | ");
    const columns = stream.columns ?? 80;
    return line.length >= columns ? line.slice(0, Math.max(0, columns - 1)) : line;
  };

  // \r then the line padded over whatever the previous, longer line left behind; no ANSI codes needed.
  const draw = (): void => {
    const line = barLine();
    stream.write(`\r${line}${" ".repeat(Math.max(0, drawnWidth - line.length))}`);
    drawnWidth = line.length;
    lastDrawMs = now();
  };
  const clearLine = (): void => {
    if (drawnWidth > 0) stream.write(`\r${" ".repeat(drawnWidth)}\r`);
    drawnWidth = 0;
  };

  return {
    update(progress) {
      start ??= { ms: now(), step: progress.step };
      latest = { ...latest, ...progress };
      if (tty && (progress.step >= total || now() - lastDrawMs >= minRedrawMs)) draw();
    },
    log(entry) {
      const isEval = Object.keys(entry).some((k) => k.startsWith("eval_"));
      if (tty) {
        const num = (k: string): number | undefined => {
          const v = entry[k];
          return typeof v === "number" ? v : undefined;
        };
        latest = {
          step: Math.max(latest.step, entry.step),
          loss: num("loss") ?? latest.loss,
          learningRate: num("learning_rate") ?? latest.learningRate,
          gradNorm: num("grad_norm") ?? latest.gradNorm,
          tokensPerSecond: num("tokens_per_second") ?? latest.tokensPerSecond,
        };
        // Every log event leaves its line above the live bar, as HF prints its dicts above tqdm's.
        clearLine();
        stream.write(`step ${entry.step}/${total} | ${formatEntryValues(entry).join(" | ")}\n`);
        draw();
        return;
      }
      const { elapsed, eta } = timing(entry.step);
      const pct = total > 0 ? ` (${Math.floor((100 * entry.step) / total)}%)` : "";
      const time = isEval ? [] : [`elapsed ${elapsed}`, `eta ${eta}`];
      // Throughput as of the last step reported (the log line comes before that step's progress update).
      const speed = !isEval && entry["tokens_per_second"] === undefined && latest.tokensPerSecond !== undefined ? [`${latest.tokensPerSecond.toFixed(0)} tok/s`] : [];
      stream.write(`${[`step ${entry.step}/${total}${pct}`, ...formatEntryValues(entry), ...speed, ...time].join(" | ")}\n`);
    },
    finish() {
      if (!tty) return;
      draw();
      stream.write("\n");
      drawnWidth = 0;
    },
  };
}
