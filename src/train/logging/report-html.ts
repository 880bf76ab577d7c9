// report.html: one self-contained page (inline CSS and SVG, no scripts, fonts or links) with the loss,
// learning-rate and grad-norm curves of a run, its summary and its configuration; written atomically.
import { rename, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { TunaError, errorMessage } from "../../util/errors.ts";
import { numberOf, type LogEntry } from "./log-entry.ts";
import { escapeXml, renderLineChart as renderChart, type ChartSeries, type LineChartSpec } from "./svg-chart.ts";

export interface ReportInput {
  title: string;
  config: Readonly<Record<string, unknown>>;
  history: readonly LogEntry[];
  summary: Readonly<Record<string, unknown>>;
}

const COLORS = { train: "#1f77b4", eval: "#ff7f0e", lr: "#2ca02c", grad: "#9467bd" };

function seriesOf(history: readonly LogEntry[], key: string, name: string, color: string, markers?: boolean): ChartSeries {
  const points = history.flatMap((e) => {
    const y = numberOf(e, key);
    return y === undefined ? [] : [{ x: e.step, y }];
  });
  return markers === undefined ? { name, color, points } : { name, color, points, markers };
}

/**
 * The step at which each whole epoch ended: the first logged step whose epoch reached it (none for a run within
 * one epoch, and none beyond 40 epochs, where the lines would hide the curves).
 */
export function epochMarks(history: readonly LogEntry[]): { x: number; epoch: number }[] {
  const points = history.flatMap((e) => {
    const epoch = numberOf(e, "epoch");
    return epoch === undefined ? [] : [{ step: e.step, epoch }];
  });
  points.sort((a, b) => a.step - b.step);
  const marks: { x: number; epoch: number }[] = [];
  for (const p of points) {
    const whole = Math.floor(p.epoch + 1e-9);
    while (whole >= (marks.at(-1)?.epoch ?? 0) + 1 && marks.length <= 40) marks.push({ x: p.step, epoch: (marks.at(-1)?.epoch ?? 0) + 1 });
  }
  return marks.length > 40 ? [] : marks;
}

const RANK_COLORS = ["#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/**
 * A chart drawn twice, on a linear and on a log10 y axis; the page's "log scale" switch (CSS only, no
 * script) shows one or the other.
 */
function bothScales(spec: LineChartSpec): string {
  return `<div class="linear-y">${renderChart(spec)}</div><div class="log-y">${renderChart({ ...spec, title: `${spec.title}, log scale`, logY: true })}</div>`;
}

/**
 * The charts of the report, in page order: loss (train and eval), learning rate, grad norm; for preference
 * training (the log has DPO's rewards) the reward margin and the reward accuracy too.
 */
export function reportCharts(history: readonly LogEntry[]): string[] {
  const marks = epochMarks(history);
  const renderLineChart = (spec: LineChartSpec): string => renderChart({ ...spec, epochMarks: marks });
  const scaled = (spec: LineChartSpec): string => bothScales({ ...spec, epochMarks: marks });
  const preference = history.some((e) => numberOf(e, "rewards/margins") !== undefined);
  const dpo = !preference
    ? []
    : [
        renderLineChart({
          title: "Reward margin (chosen - rejected)",
          xLabel: "step",
          integerX: true,
          series: [seriesOf(history, "rewards/margins", "train", COLORS.train), seriesOf(history, "eval_rewards/margins", "eval", COLORS.eval, true)],
        }),
        renderLineChart({
          title: "Reward accuracy (chosen above rejected)",
          xLabel: "step",
          integerX: true,
          series: [seriesOf(history, "rewards/accuracies", "train", COLORS.train), seriesOf(history, "eval_rewards/accuracies", "eval", COLORS.eval, true)],
        }),
      ];
  // Eval points are few and far apart; markers keep each one visible.
  const lossSeries = [seriesOf(history, "loss", "train loss", COLORS.train), seriesOf(history, "eval_loss", "eval loss", COLORS.eval, true)];
  const perRank = [...new Set(history.flatMap((e) => Object.keys(e).filter((k) => k.startsWith("peak_memory_gib_rank_"))))].sort();
  const memory = history.some((e) => numberOf(e, "peak_memory_gib") !== undefined)
    ? [
        scaled({
          title: "Peak memory (GiB)",
          xLabel: "step",
          integerX: true,
          series: [seriesOf(history, "peak_memory_gib", perRank.length > 0 ? "largest rank" : "peak", COLORS.grad), ...perRank.map((k, i) => seriesOf(history, k, `rank ${k.slice("peak_memory_gib_rank_".length)}`, RANK_COLORS[i % RANK_COLORS.length]!))],
        }),
      ]
    : [];
  const throughput = history.some((e) => numberOf(e, "tokens_per_second") !== undefined)
    ? [scaled({ title: "Throughput (tokens/s, all ranks)", xLabel: "step", integerX: true, series: [seriesOf(history, "tokens_per_second", "tokens/s", COLORS.lr)] })]
    : [];
  return [
    scaled({ title: "Loss", xLabel: "step", integerX: true, series: lossSeries }),
    renderLineChart({ title: "Learning rate", xLabel: "step", integerX: true, series: [seriesOf(history, "learning_rate", "learning rate", COLORS.lr)] }),
    renderLineChart({ title: "Gradient norm (before clipping)", xLabel: "step", integerX: true, series: [seriesOf(history, "grad_norm", "grad norm", COLORS.grad)] }),
    ...throughput,
    ...memory,
    ...dpo,
  ];
}

function formatValue(value: unknown): string {
  // Ten significant digits: float noise goes (0.30000000000000004), a runtime keeps its decimals.
  if (typeof value === "number") return String(Number(value.toPrecision(10)));
  if (typeof value === "string") return value;
  if (value === undefined) return "";
  // JSON.stringify answers undefined for functions and symbols, whatever its declared type says.
  const json = JSON.stringify(value) as string | undefined;
  return json ?? typeof value;
}

function table(rows: Readonly<Record<string, unknown>>, cssClass: string): string {
  const keys = Object.keys(rows);
  if (keys.length === 0) return `<p class="empty">none</p>`;
  const body = keys.map((k) => `<tr><th scope="row">${escapeXml(k)}</th><td>${escapeXml(formatValue(rows[k]))}</td></tr>`).join("\n");
  return `<table class="${cssClass}">\n${body}\n</table>`;
}

const STYLE = `
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 16px; max-width: 1400px; }
.chart { width: 100%; height: auto; box-sizing: border-box; border: 1px solid #e3e3e3; border-radius: 4px; background: #fff; }
.chart .plot { fill: #fcfcfc; stroke: #999; }
.chart .grid { stroke: #e6e6e6; }
.chart .epoch { stroke: #999; stroke-dasharray: 4 3; }
.chart .epoch-label { font-size: 11px; fill: #777; }
.chart .tick { font-size: 11px; fill: #555; }
.chart .axis-label, .chart .legend { font-size: 12px; fill: #333; }
.chart .chart-title { font-size: 14px; font-weight: 600; fill: #222; }
.chart .line { fill: none; stroke-width: 1.6; }
.chart .nonfinite { stroke-width: 2; }
.chart .no-data { font-size: 13px; fill: #888; }
table { border-collapse: collapse; font-size: 13px; }
th, td { text-align: left; padding: 3px 12px 3px 0; border-bottom: 1px solid #eee; vertical-align: top; }
th { font-weight: 500; color: #555; white-space: nowrap; }
td { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; word-break: break-all; }
.empty { color: #888; }
.log-y { display: none; }
.log-scale:checked ~ .charts .log-y { display: block; }
.log-scale:checked ~ .charts .linear-y { display: none; }
label { font-size: 13px; color: #444; }
`;

/** The page as a string. Every value is escaped; nothing refers to another file or the network. */
export function renderReportHtml(input: ReportInput): string {
  const steps = input.history.map((e) => e.step);
  const first = Math.min(...steps);
  const last = Math.max(...steps);
  const span = first === last ? `step ${first}` : `steps ${first}–${last}`;
  const subtitle = steps.length === 0 ? "no log entries" : `${steps.length} log ${steps.length === 1 ? "entry" : "entries"}, ${span}`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeXml(input.title)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>${escapeXml(input.title)}</h1>
<p class="subtitle">${escapeXml(subtitle)}</p>
<h2>Curves</h2>
<input type="checkbox" id="log-scale" class="log-scale"><label for="log-scale"> log scale (loss and memory)</label>
<div class="charts">
${reportCharts(input.history).join("\n")}
</div>
<h2>Summary</h2>
${table(input.summary, "summary")}
<h2>Configuration</h2>
${table(input.config, "config")}
</body>
</html>
`;
}

/** Writes the report to `path` through a temporary file in the same folder, renamed into place. */
export async function writeReportHtml(path: string, input: ReportInput): Promise<void> {
  const staging = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Date.now()}`);
  try {
    await writeFile(staging, renderReportHtml(input), "utf8");
    await rename(staging, path);
  } catch (e) {
    await rm(staging, { force: true });
    throw new TunaError("IO", `cannot write report ${path}: ${errorMessage(e)}; check that the folder exists and is writable.`, { cause: e });
  }
}
