import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LogEntry } from "../../../src/train/logging/log-entry.ts";
import { epochMarks, renderReportHtml, writeReportHtml, type ReportInput } from "../../../src/train/logging/report-html.ts";
import { formatNumber, niceAxis, renderLineChart, thinRun } from "../../../src/train/logging/svg-chart.ts";
import { isTunaError } from "../../../src/util/errors.ts";

const VOID_ELEMENTS = new Set(["meta", "br", "hr", "img", "input", "link"]);

/** Checks that every element is closed in order (self-closing and void elements aside); returns the tag names seen. */
function checkBalanced(html: string): string[] {
  const stack: string[] = [];
  const seen: string[] = [];
  const body = html.replace(/<!DOCTYPE html>/i, "").replace(/<style>[\s\S]*?<\/style>/, "<style></style>");
  for (const m of body.matchAll(/<(\/?)([a-zA-Z][a-zA-Z0-9]*)\b[^>]*?(\/?)>/g)) {
    const [, closing, name, selfClosing] = m;
    const tag = name!.toLowerCase();
    if (closing === "/") {
      assert.equal(stack.pop(), tag, `</${tag}> closes something else`);
    } else {
      seen.push(tag);
      if (selfClosing !== "/" && !VOID_ELEMENTS.has(tag)) stack.push(tag);
    }
  }
  assert.deepEqual(stack, [], "unclosed elements");
  return seen;
}

function svgs(html: string): string[] {
  return [...html.matchAll(/<svg[\s\S]*?<\/svg>/g)].map((m) => m[0]);
}

function sampleHistory(): LogEntry[] {
  const history: LogEntry[] = [];
  for (let step = 10; step <= 100; step += 10) {
    history.push({ step, epoch: step / 100, loss: 3 - step / 50, learning_rate: 2e-4 * (1 - step / 100), grad_norm: step === 40 ? Number.NaN : 1 / step, tokens_per_second: 1000 });
    if (step % 50 === 0) history.push({ step, eval_loss: 2.5 - step / 100, eval_perplexity: Math.exp(2.5 - step / 100) });
  }
  return history;
}

const INPUT: ReportInput = {
  title: "run <one> & \"two\"",
  config: { model_name_or_path: "tiny-llama", learning_rate: 2e-4, lora_target_modules: ["q_proj", "v_proj"], "weird<key>": "a<b" },
  history: sampleHistory(),
  summary: { train_runtime: 1234.56, train_loss: 1.7345, total_flos: 1.23e15 },
};

test("the report has one chart per curve group, with ticks, legends and axis labels", () => {
  const html = renderReportHtml(INPUT);
  checkBalanced(html);
  const charts = svgs(html);
  // Loss twice (linear and log10 y, one shown by the CSS switch), learning rate, grad norm, throughput twice.
  assert.equal(charts.length, 6);
  const [loss, lossLog, lr, grad, speed, speedLog] = charts as [string, string, string, string, string, string];
  assert.match(speed, />Throughput \(tokens\/s, all ranks\)</);
  assert.match(speedLog, />Throughput \(tokens\/s, all ranks\), log scale</);
  // The one whole epoch ends at step 100: a dashed line on every chart.
  for (const chart of charts) assert.match(chart, /<line class="epoch" [^>]*><title>epoch 1 ends at step 100<\/title><\/line>\n<text class="epoch-label"[^>]*>epoch 1</);
  assert.match(lossLog, />Loss, log scale</);
  assert.match(lossLog, /class="tick"[^>]*>1</);
  assert.match(lossLog, /class="tick"[^>]*>10</);
  assert.match(html, /<input type="checkbox" id="log-scale" class="log-scale">/);
  assert.match(html, /\.log-scale:checked ~ \.charts \.log-y \{ display: block; \}/);
  assert.match(loss, />Loss</);
  assert.match(loss, /train loss</);
  assert.match(loss, /eval loss</);
  assert.match(lr, />Learning rate</);
  assert.match(grad, />Gradient norm/);
  for (const chart of charts) {
    assert.ok((chart.match(/class="tick"/g) ?? []).length >= 4, "tick labels on both axes");
    assert.match(chart, /class="axis-label"[^>]*>step</);
    assert.match(chart, /<polyline /);
  }
  // The two eval points are drawn as markers with hover titles.
  assert.equal((loss.match(/<circle [^>]*fill="#ff7f0e"/g) ?? []).length, 2);
  assert.match(loss, /<title>eval loss, step 50: 2<\/title>/);
});

test("a NaN breaks the line into two pieces and is marked; the legend counts it", () => {
  const grad = svgs(renderReportHtml(INPUT))[3]!;
  assert.equal((grad.match(/<polyline /g) ?? []).length, 2); // steps 10-30 and 50-100
  assert.equal((grad.match(/class="nonfinite"/g) ?? []).length, 1);
  assert.match(grad, /grad norm \(1 non-finite, marked ×\)/);
  assert.match(grad, /<title>grad norm, step 40: NaN<\/title>/);
});

test("the configuration and summary are tables holding every key, escaped", () => {
  const html = renderReportHtml(INPUT);
  for (const key of ["model_name_or_path", "learning_rate", "lora_target_modules", "train_runtime", "train_loss", "total_flos"]) {
    assert.match(html, new RegExp(`<th scope="row">${key}</th>`));
  }
  assert.match(html, /<th scope="row">weird&lt;key&gt;<\/th><td>a&lt;b<\/td>/);
  assert.match(html, /<td>1234.56<\/td>/);
  assert.match(html, /<td>\[&quot;q_proj&quot;,&quot;v_proj&quot;\]<\/td>/);
  assert.match(html, /<title>run &lt;one&gt; &amp; &quot;two&quot;<\/title>/);
});

test("the page is self-contained: no scripts, links, fonts or URLs", () => {
  const html = renderReportHtml(INPUT);
  const tags = checkBalanced(html);
  assert.ok(!tags.includes("script") && !tags.includes("link") && !tags.includes("img") && !tags.includes("iframe"));
  for (const forbidden of ["http:", "https:", "//", "src=", "href=", "url(", "@import", "@font-face"]) {
    assert.ok(!html.includes(forbidden), `contains ${forbidden}`);
  }
});

test("a single point is drawn as a marker on axes widened around it; an empty history says so", () => {
  const one = svgs(renderReportHtml({ title: "t", config: {}, history: [{ step: 5, loss: 2.5, learning_rate: 1e-4, grad_norm: 0.5 }], summary: {} }));
  for (const chart of one) {
    assert.doesNotMatch(chart, /<polyline /);
    assert.match(chart, /<circle /);
    assert.doesNotMatch(chart, /NaN|Infinity/);
  }
  assert.match(one[0]!, /class="tick"[^>]*>4</);
  assert.match(one[0]!, /class="tick"[^>]*>6</);
  assert.match(one[0]!, /eval loss \(none logged\)/);

  const empty = renderReportHtml({ title: "t", config: {}, history: [], summary: {} });
  checkBalanced(empty);
  assert.equal((empty.match(/no data logged/g) ?? []).length, 4);
  assert.match(empty, /no log entries/);
});

test("many points are drawn as lines without per-point markers", () => {
  const points = Array.from({ length: 500 }, (_, i) => ({ x: i + 1, y: Math.sin(i / 10) }));
  const chart = renderLineChart({ title: "t", xLabel: "step", integerX: true, series: [{ name: "s", color: "#000", points }] });
  assert.doesNotMatch(chart, /<circle /);
  assert.equal((chart.match(/<polyline /g) ?? []).length, 1);
});

test("axis ticks are round numbers covering the data", () => {
  assert.deepEqual(niceAxis(0, 1), { min: 0, max: 1, ticks: [0, 0.2, 0.4, 0.6, 0.8, 1] });
  assert.deepEqual(niceAxis(0.3, 2.85).ticks, [0, 0.5, 1, 1.5, 2, 2.5, 3]);
  assert.deepEqual(niceAxis(1, 3, 6, true).ticks, [1, 2, 3]); // integer steps: no 1.5
  assert.deepEqual(niceAxis(5, 5, 5, true).ticks, [4, 5, 6]);
  assert.deepEqual(niceAxis(2.5, 2.5).ticks, [2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 2.8]);
  const lr = niceAxis(0, 2e-4);
  assert.deepEqual(lr.ticks.map(formatNumber), ["0", "5e-5", "1e-4", "1.5e-4", "2e-4"]);
});

test("numbers are formatted compactly without float noise", () => {
  assert.equal(formatNumber(0), "0");
  assert.equal(formatNumber(0.1 + 0.2), "0.3");
  assert.equal(formatNumber(2e-4), "2e-4");
  assert.equal(formatNumber(250), "250");
  assert.equal(formatNumber(1.5e6), "1.5e+6");
  assert.equal(formatNumber(Number.NaN), "NaN");
});

test("writeReportHtml renames a finished file into place and leaves no temporary file", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tuna-report-test-"));
  try {
    const path = join(dir, "report.html");
    await writeReportHtml(path, INPUT);
    await writeReportHtml(path, { ...INPUT, title: "second" }); // replaces the first
    assert.deepEqual(await readdir(dir), ["report.html"]);
    const html = await readFile(path, "utf8");
    assert.match(html, /<h1>second<\/h1>/);
    assert.ok(html.endsWith("</html>\n"));
    await assert.rejects(writeReportHtml(join(dir, "missing", "report.html"), INPUT), (e) => isTunaError(e) && e.code === "IO" && e.message.includes("missing"));
    assert.deepEqual(await readdir(dir), ["report.html"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

void test("a long run is thinned per pixel column to its first, lowest, highest and last points; short runs are kept whole", () => {
  const short = Array.from({ length: 50 }, (_, i) => ({ x: i, y: i % 7 }));
  assert.equal(thinRun(short, (x) => x), short);
  // 100,000 steps over 500 pixels, with one spike at step 77,777.
  const long = Array.from({ length: 100_000 }, (_, i) => ({ x: i + 1, y: i === 77_776 ? 50 : Math.sin(i / 1000) }));
  const thin = thinRun(long, (x) => (x / 100_000) * 500);
  assert.ok(thin.length <= 4 * 501, `${thin.length} points`);
  assert.ok(thin.some((p) => p.y === 50), "the spike survives");
  assert.equal(thin[0], long[0]);
  assert.equal(thin[thin.length - 1], long[long.length - 1]);
  for (let i = 1; i < thin.length; i++) assert.ok(thin[i]!.x > thin[i - 1]!.x, "step order is kept");
  const html = renderLineChart({ title: "loss", xLabel: "step", integerX: true, series: [{ name: "train", color: "#000", points: long }] });
  assert.ok(html.length < 200_000, `${html.length} characters`);
});

void test("a DPO run's report adds the reward margin and reward accuracy curves (train and eval); an SFT report has none", () => {
  const base = (history: LogEntry[]): ReportInput => ({ title: "t", config: {}, history, summary: {} });
  const dpo: LogEntry[] = [1, 2, 3].map((step) => ({ step, epoch: step / 3, loss: 0.69 - step / 100, "rewards/margins": step / 10, "rewards/accuracies": step / 4 }));
  dpo.push({ step: 3, "eval_rewards/margins": 0.25, "eval_rewards/accuracies": 0.5 });
  const html = renderReportHtml(base(dpo));
  checkBalanced(html);
  assert.equal(svgs(html).length, 6);
  assert.match(html, /Reward margin \(chosen - rejected\)/);
  assert.match(html, /Reward accuracy \(chosen above rejected\)/);
  const sft = renderReportHtml(base(sampleHistory()));
  assert.equal(svgs(sft).length, 6);
  assert.doesNotMatch(sft, /Reward margin/);
});

test("peak memory gets a chart (each rank's too in a job); a log y axis leaves out values it cannot place", () => {
  const history: LogEntry[] = [1, 2, 3].map((step) => ({ step, epoch: step, loss: 1 / step, peak_memory_gib: 2 + step, peak_memory_gib_rank_0: 2 + step, peak_memory_gib_rank_1: 1 + step }));
  const charts = svgs(renderReportHtml({ title: "t", config: {}, history, summary: {} }));
  const memory = charts.find((c) => />Peak memory \(GiB\)</.test(c));
  assert.ok(memory !== undefined);
  assert.match(memory, /largest rank</);
  assert.match(memory, /rank 1</);
  const log = renderLineChart({ title: "t", xLabel: "step", logY: true, series: [{ name: "s", color: "#000", points: [{ x: 1, y: 0.01 }, { x: 2, y: 0 }, { x: 3, y: 100 }] }] });
  assert.match(log, /class="tick"[^>]*>0\.01</);
  assert.match(log, /class="tick"[^>]*>100</);
  assert.equal((log.match(/class="nonfinite"/g) ?? []).length, 1, "0 has no place on a log axis");
});

void test("epoch marks: the first logged step at or past each whole epoch; none within one epoch or beyond 40", () => {
  const log = (pairs: [number, number][]): LogEntry[] => pairs.map(([step, epoch]) => ({ step, epoch, loss: 1 }));
  assert.deepEqual(epochMarks(log([[5, 0.4], [10, 0.8], [15, 1.2], [20, 1.6], [25, 2.0], [30, 2.4]])), [{ x: 15, epoch: 1 }, { x: 25, epoch: 2 }]);
  // A log every 3 epochs still marks each epoch (at the step that passed it), in step order whatever the input order.
  assert.deepEqual(epochMarks(log([[20, 6], [10, 3]])), [1, 2, 3, 4, 5, 6].map((e) => ({ x: e <= 3 ? 10 : 20, epoch: e })));
  assert.deepEqual(epochMarks(log([[1, 0.25], [4, 0.9999]])), []);
  assert.deepEqual(epochMarks(log([[1, 41]])), []);
  // Float noise in the logged epoch (0.9999999999) does not miss the boundary; eval entries without an epoch are skipped.
  assert.deepEqual(epochMarks([{ step: 3, epoch: 0.99999999999 }, { step: 3, eval_loss: 2 }]), [{ x: 3, epoch: 1 }]);
});
