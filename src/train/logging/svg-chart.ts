// Line charts as inline SVG strings for the HTML report: nice axis ticks, a legend, gaps at
// non-finite values (marked along the top edge), markers and hover titles for sparse series.

export interface ChartPoint {
  x: number;
  y: number;
}

export interface ChartSeries {
  name: string;
  color: string;
  points: readonly ChartPoint[];
  /** Draw a marker at each point; on by default when the series has few points. */
  markers?: boolean;
}

export interface LineChartSpec {
  title: string;
  xLabel: string;
  series: readonly ChartSeries[];
  /** Integer x values (steps): ticks never fall between integers. */
  integerX?: boolean;
  /** A log10 y axis (ticks at powers of ten); values <= 0 cannot be drawn there and show as gaps. */
  logY?: boolean;
  /** Where epochs end along x (the step that completed epoch `epoch`): a dashed line labelled "epoch N" each. */
  epochMarks?: readonly { x: number; epoch: number }[];
  width?: number;
  height?: number;
}

export function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

/** Rounds away float noise (0.30000000000000004 -> 0.3) and formats compactly (2e-4, 1.5e+6, 250). */
export function formatNumber(value: number): string {
  if (value === 0) return "0";
  if (!Number.isFinite(value)) return String(value);
  const rounded = Number(value.toPrecision(4));
  const abs = Math.abs(rounded);
  return abs < 1e-3 || abs >= 1e6 ? rounded.toExponential() : String(rounded);
}

export interface Axis {
  min: number;
  max: number;
  ticks: number[];
}

/**
 * About `count` ticks at 1, 2 or 5 times a power of ten covering [lo, hi]; the axis is widened to the
 * outer ticks. A zero-width range (one point, or a flat series) is widened around the value first.
 */
export function niceAxis(lo: number, hi: number, count = 5, integer = false): Axis {
  if (lo === hi) {
    const pad = integer ? 1 : Math.abs(lo) * 0.1 || 1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const normalized = raw / magnitude;
  let step = (normalized < 1.5 ? 1 : normalized < 3 ? 2 : normalized < 7 ? 5 : 10) * magnitude;
  if (integer) step = Math.max(1, Math.round(step));
  // The slack keeps 2e-4 / 5e-5 = 4.000000000000001 from adding a tick past the data.
  const first = Math.floor(lo / step + 1e-9);
  const last = Math.ceil(hi / step - 1e-9);
  const ticks: number[] = [];
  for (let i = first; i <= last; i++) ticks.push(Number((i * step).toPrecision(12)));
  return { min: ticks[0]!, max: ticks[ticks.length - 1]!, ticks };
}

/** A log axis (in log10 units) from the decade at or below lo to the one at or above hi, a tick per decade. */
function decades(lo: number, hi: number): Axis {
  let first = Math.floor(lo);
  let last = Math.ceil(hi);
  if (first === last) {
    first -= 1;
    last += 1;
  }
  const ticks: number[] = [];
  for (let d = first; d <= last; d++) ticks.push(d);
  return { min: first, max: last, ticks };
}

const MARGIN = { left: 72, right: 20, top: 58, bottom: 46 };
const FEW_POINTS = 60;

/** One chart as an `<svg>` element (no xmlns needed inline in HTML5). */
export function renderLineChart(spec: LineChartSpec): string {
  const width = spec.width ?? 560;
  const height = spec.height ?? 320;
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = height - MARGIN.top - MARGIN.bottom;
  const finite = spec.series.flatMap((s) => s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y)));
  const allX = spec.series.flatMap((s) => s.points.map((p) => p.x).filter(Number.isFinite));
  const out: string[] = [];
  out.push(`<svg class="chart" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeXml(spec.title)}">`);
  out.push(`<text class="chart-title" x="${MARGIN.left}" y="20">${escapeXml(spec.title)}</text>`);
  out.push(legend(spec.series, MARGIN.left, 40));
  if (allX.length === 0) {
    out.push(`<rect class="plot" x="${MARGIN.left}" y="${MARGIN.top}" width="${plotW}" height="${plotH}"/>`);
    out.push(`<text class="no-data" x="${MARGIN.left + plotW / 2}" y="${MARGIN.top + plotH / 2}" text-anchor="middle">no data logged</text>`);
    out.push("</svg>");
    return out.join("\n");
  }
  const xAxis = niceAxis(Math.min(...allX), Math.max(...allX), 6, spec.integerX ?? false);
  // On a log axis a value is placed by its log10; the axis spans whole decades.
  const logY = spec.logY === true;
  const toAxis = (y: number): number => (logY ? (y > 0 ? Math.log10(y) : Number.NaN) : y);
  const ys = finite.map((p) => toAxis(p.y)).filter(Number.isFinite);
  const yAxis = ys.length === 0 ? niceAxis(0, 1, 5) : logY ? decades(Math.min(...ys), Math.max(...ys)) : niceAxis(Math.min(...ys), Math.max(...ys), 5);
  const sx = (x: number): number => MARGIN.left + ((x - xAxis.min) / (xAxis.max - xAxis.min)) * plotW;
  const sy = (y: number): number => MARGIN.top + plotH - ((toAxis(y) - yAxis.min) / (yAxis.max - yAxis.min)) * plotH;
  const tickY = (t: number): number => MARGIN.top + plotH - ((t - yAxis.min) / (yAxis.max - yAxis.min)) * plotH;
  const f = (v: number): string => v.toFixed(1);

  out.push(`<rect class="plot" x="${MARGIN.left}" y="${MARGIN.top}" width="${plotW}" height="${plotH}"/>`);
  for (const t of yAxis.ticks) {
    out.push(`<line class="grid" x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${f(tickY(t))}" y2="${f(tickY(t))}"/>`);
    out.push(`<text class="tick" x="${MARGIN.left - 6}" y="${f(tickY(t) + 4)}" text-anchor="end">${formatNumber(logY ? 10 ** t : t)}</text>`);
  }
  for (const t of xAxis.ticks) {
    out.push(`<line class="grid" x1="${f(sx(t))}" x2="${f(sx(t))}" y1="${MARGIN.top}" y2="${MARGIN.top + plotH}"/>`);
    out.push(`<text class="tick" x="${f(sx(t))}" y="${MARGIN.top + plotH + 16}" text-anchor="middle">${formatNumber(t)}</text>`);
  }
  out.push(`<text class="axis-label" x="${MARGIN.left + plotW / 2}" y="${height - 8}" text-anchor="middle">${escapeXml(spec.xLabel)}</text>`);
  for (const m of spec.epochMarks ?? []) {
    if (!(m.x >= xAxis.min && m.x <= xAxis.max)) continue;
    out.push(`<line class="epoch" x1="${f(sx(m.x))}" x2="${f(sx(m.x))}" y1="${MARGIN.top}" y2="${MARGIN.top + plotH}"><title>epoch ${m.epoch} ends at ${escapeXml(spec.xLabel)} ${formatNumber(m.x)}</title></line>`);
    out.push(`<text class="epoch-label" x="${f(sx(m.x) - 3)}" y="${MARGIN.top + 12}" text-anchor="end">epoch ${m.epoch}</text>`);
  }

  for (const s of spec.series) {
    const points = [...s.points].filter((p) => Number.isFinite(p.x)).sort((a, b) => a.x - b.x);
    // A non-finite value breaks the line, so a NaN step is a visible gap rather than a bridged segment.
    const runs: ChartPoint[][] = [[]];
    for (const p of points) {
      if (Number.isFinite(toAxis(p.y))) runs[runs.length - 1]!.push(p);
      else if (runs[runs.length - 1]!.length > 0) runs.push([]);
    }
    const coords = (p: ChartPoint): string => `${f(sx(p.x))},${f(sy(p.y))}`;
    for (const r of runs) if (r.length > 1) out.push(`<polyline class="line" stroke="${s.color}" points="${thinRun(r, sx).map(coords).join(" ")}"/>`);
    // A point with no neighbour to draw a line to would be invisible without a marker.
    const isolated = new Set(runs.filter((r) => r.length === 1).map((r) => r[0]!));
    const markers = s.markers ?? points.length <= FEW_POINTS;
    for (const p of points) {
      const label = `${escapeXml(s.name)}, ${escapeXml(spec.xLabel)} ${formatNumber(p.x)}: ${formatNumber(p.y)}`;
      if (!Number.isFinite(toAxis(p.y))) {
        const x = sx(p.x);
        const y = MARGIN.top + 6;
        out.push(`<path class="nonfinite" stroke="${s.color}" d="M${f(x - 4)},${f(y - 4)}L${f(x + 4)},${f(y + 4)}M${f(x - 4)},${f(y + 4)}L${f(x + 4)},${f(y - 4)}"><title>${label}</title></path>`);
      } else if (markers || isolated.has(p)) {
        out.push(`<circle class="marker" fill="${s.color}" cx="${f(sx(p.x))}" cy="${f(sy(p.y))}" r="3"><title>${label}</title></circle>`);
      }
    }
  }
  out.push("</svg>");
  return out.join("\n");
}

/**
 * A long run drawn as it would look: per pixel column only its first, lowest, highest and last point
 * (in step order), so a 100k-step history stays a small file with every spike still visible.
 */
export function thinRun(run: readonly ChartPoint[], toPixel: (x: number) => number): readonly ChartPoint[] {
  if (run.length <= THIN_ABOVE) return run;
  const out: ChartPoint[] = [];
  let column: ChartPoint[] = [];
  const flush = (): void => {
    if (column.length === 0) return;
    let lo = column[0]!;
    let hi = column[0]!;
    for (const p of column) {
      if (p.y < lo.y) lo = p;
      if (p.y > hi.y) hi = p;
    }
    const keep = new Set([column[0]!, lo, hi, column[column.length - 1]!]);
    for (const p of column) if (keep.has(p)) out.push(p);
    column = [];
  };
  let current = Number.NaN;
  for (const p of run) {
    const px = Math.round(toPixel(p.x));
    if (px !== current) {
      flush();
      current = px;
    }
    column.push(p);
  }
  flush();
  return out;
}

/** Runs up to this many points are drawn point for point. */
const THIN_ABOVE = 2000;

function legend(series: readonly ChartSeries[], x0: number, y: number): string {
  const items: string[] = [];
  let x = x0;
  for (const s of series) {
    const finiteCount = s.points.filter((p) => Number.isFinite(p.y)).length;
    const nonFinite = s.points.length - finiteCount;
    let text = s.name;
    if (s.points.length === 0) text += " (none logged)";
    else if (nonFinite > 0) text += ` (${nonFinite} non-finite, marked ×)`;
    items.push(`<g class="legend-item"><rect x="${x}" y="${y - 9}" width="14" height="4" fill="${s.color}"/><text class="legend" x="${x + 20}" y="${y - 3}">${escapeXml(text)}</text></g>`);
    x += 34 + text.length * 7;
  }
  return `<g class="legend">${items.join("")}</g>`;
}
