// Where a run's log entries go on rank 0 (metrics.jsonl always; TensorBoard and MLflow as report_to says) and
// what the finished run leaves in its output folder beside the model: train_results.json, trainer_state.json,
// report.html and the README.md model card, as the Trainer writes them.
import { basename, join } from "node:path";
import type { TrainConfig } from "../config/index.ts";
import { writeBytesAtomically } from "../io/safetensors/writer.ts";
import { writeJson } from "./checkpoint.ts";
import type { LogEntry } from "./logging/log-entry.ts";
import { createMetricsJsonlWriter, metricsJsonlPath } from "./logging/metrics-jsonl.ts";
import { createMlflowRun, mlflowRoot } from "./logging/mlflow.ts";
import { writeReportHtml } from "./logging/report-html.ts";
import { createTensorBoardWriter, resolveLoggingDir } from "./logging/tensorboard.ts";
import { renderModelCard } from "./model-card.ts";

export interface RunLog {
  /** Every log entry of the run, as it happens. */
  add(entry: LogEntry): void;
  /** The run stopped (a signal, or an error): the writers are closed, trackers told how it ended. */
  stopped(how: "KILLED" | "FAILED"): void;
  /** The run finished: its summary and the files the Trainer leaves; returns what was written, for a message. */
  finished(r: { objective: "sft" | "dpo"; world: number; history: readonly LogEntry[]; globalStep: number; trainLoss: number; evalLoss: number | undefined; runtimeMs: number; tokensSeen: number }): Promise<string>;
}

export function openRunLog(c: TrainConfig, outputDir: string, resumeAtStep: number | undefined, say: (m: string) => void): RunLog {
  // all: every tracker tuna writes that is available (mlflow when a tracking URI is configured).
  const reports = c.report_to.includes("all") ? ["tensorboard", "jsonl", ...((process.env["MLFLOW_TRACKING_URI"] ?? "") !== "" ? ["mlflow"] : [])] : c.report_to;
  const metrics = createMetricsJsonlWriter(metricsJsonlPath(outputDir), resumeAtStep === undefined ? {} : { resumeAtStep });
  const tensorboard = reports.includes("tensorboard") ? createTensorBoardWriter(resolveLoggingDir(outputDir)) : undefined;
  tensorboard?.addText("args", JSON.stringify(c, null, 2), 0);
  const mlflow = reports.includes("mlflow")
    ? createMlflowRun({ root: mlflowRoot(), experiment: process.env["MLFLOW_EXPERIMENT_NAME"] ?? "Default", runName: c.run_name ?? basename(outputDir), params: c })
    : undefined;
  if (mlflow !== undefined) say(`mlflow: run ${mlflow.runId} in ${mlflow.dir}`);
  return {
    add(entry) {
      metrics.append(entry);
      mlflow?.logMetrics(entry);
      tensorboard?.addLogs(entry, entry.step);
      tensorboard?.flush();
    },
    stopped(how) {
      tensorboard?.close();
      metrics.close();
      mlflow?.finish(how);
    },
    async finished(r) {
      const summary = {
        train_runtime: r.runtimeMs / 1000,
        train_loss: r.trainLoss,
        global_step: r.globalStep,
        train_tokens_per_second: r.tokensSeen / (r.runtimeMs / 1000),
        // A loss over tokens has a perplexity; DPO's over pairs does not.
        ...(r.evalLoss === undefined ? {} : { eval_loss: r.evalLoss, ...(r.objective === "dpo" ? {} : { eval_perplexity: Math.exp(r.evalLoss) }) }),
      };
      await writeJson(join(outputDir, "train_results.json"), summary);
      await writeJson(join(outputDir, "trainer_state.json"), { global_step: r.globalStep, log_history: r.history, max_steps: r.globalStep });
      tensorboard?.addLogs({ step: r.globalStep, ...summary }, r.globalStep);
      tensorboard?.close();
      mlflow?.logMetrics({ step: r.globalStep, ...summary });
      mlflow?.finish("FINISHED");
      metrics.close();
      await writeReportHtml(join(outputDir, "report.html"), {
        title: `tuna ${r.objective === "dpo" ? "dpo" : "run"}: ${c.model_name_or_path} on ${c.dataset_name}`,
        config: c,
        history: r.history,
        summary,
      });
      const card = renderModelCard({ config: c, objective: r.objective, world: r.world, history: r.history, globalStep: r.globalStep, trainLoss: r.trainLoss, evalLoss: r.evalLoss });
      await writeBytesAtomically(join(outputDir, "README.md"), new TextEncoder().encode(card));
      return `README.md, report.html, metrics.jsonl${tensorboard === undefined ? "" : ", runs/"}`;
    },
  };
}
