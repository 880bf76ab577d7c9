// The demos' measurements in the run's report.html: the report is rendered again with the held-out results
// (before and after) in its summary, beside what train_results.json holds.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { TrainConfig } from "../config/index.ts";
import type { LogEntry } from "./logging/log-entry.ts";
import { writeReportHtml } from "./logging/report-html.ts";

export async function addDemoResults(outputDir: string, title: string, config: TrainConfig, history: readonly LogEntry[], results: Readonly<Record<string, number>>): Promise<void> {
  const summary = JSON.parse(await readFile(join(outputDir, "train_results.json"), "utf8")) as Record<string, unknown>;
  await writeReportHtml(join(outputDir, "report.html"), { title, config, history, summary: { ...summary, ...results } });
}
