// `tuna train`: help, argument parsing and validation, the resolved-configuration printout, and the
// training recipe (src/train/recipe.ts).
import { TunaError } from "../../util/errors.ts";
import { processOutput, type CliOutput } from "../output.ts";
import { runTraining, type Objective } from "../../train/recipe.ts";
import { refuseDpoFields, renderDpoHelp, withDpoDefaults } from "./dpo-config.ts";
import { signalExitCode } from "../../train/interrupt.ts";
import { processPlace } from "../../dist/launch-env.ts";
import { launchCommand } from "./launch.ts";
import { checkRanksFitGpus } from "../../dist/gpu-fit.ts";
import { requestedTransport } from "../../dist/gpu-collective.ts";
import { findCudaLibraries } from "../../gpu/discover.ts";
import { probeDriver } from "../../gpu/driver-probe.ts";
import type { ProgressStream } from "../../train/logging/progress.ts";
import { formatResolvedConfig, parseTrainArgs, renderTrainHelp, unsupportedFeatures } from "../../config/index.ts";

export async function trainCommand(args: string[], output: CliOutput): Promise<number> {
  return runTrainingCommand(args, output, "sft");
}

/** `tuna train` (SFT) and `tuna dpo` share everything but the objective and its settings. */
export async function runTrainingCommand(args: string[], output: CliOutput, objective: Objective): Promise<number> {
  const command = objective === "dpo" ? "dpo" : "train";
  if (args.includes("--help") || args.includes("-h")) {
    output.out(objective === "dpo" ? renderDpoHelp() : renderTrainHelp());
    return 0;
  }
  const parsed = await parseTrainArgs(args);
  const resolved = objective === "dpo" ? withDpoDefaults(parsed) : refuseDpoFields(parsed);
  const unsupported = unsupportedFeatures(resolved.config);
  if (processPlace().rank === 0) for (const notice of resolved.notices) output.err(`note: ${notice}`);
  if (resolved.config.print_config) {
    output.out(formatResolvedConfig(resolved));
    for (const message of unsupported) output.err(`note: ${message}`);
    return 0;
  }
  if (unsupported.length > 0) throw new TunaError("UNSUPPORTED", unsupported.join("\n"));
  const launch = resolved.launch;
  if (launch !== undefined && launch.numProcesses > 1 && processPlace().worldSize === 1) {
    // `accelerate launch --config_file X train.py ...` in one command: start this machine's ranks of the same
    // `tuna train` (each then finds itself a rank and joins the job).
    const perMachine = launch.numProcesses / launch.numMachines;
    checkRanksFitGpus({ processesPerMachine: perMachine, gpusSeen: visibleGpuCount(), gpuIds: launch.gpuIds, device: resolved.config.device, shareGpus: requestedTransport() === "host" });
    output.err(`tuna ${command}: ${launch.source} asks for ${launch.numProcesses} processes; starting ${perMachine} here (machine ${launch.machineRank}).`);
    return launchCommand(
      [
        "--nproc_per_node", String(perMachine),
        "--nnodes", String(launch.numMachines),
        "--node_rank", String(launch.machineRank),
        ...(launch.mainProcessIp === undefined ? [] : ["--master_addr", launch.mainProcessIp]),
        ...(launch.mainProcessPort === undefined ? [] : ["--master_port", String(launch.mainProcessPort)]),
        "tuna", command, ...args,
      ],
      output,
      launch.gpuIds === undefined || launch.gpuIds === "all" ? {} : { CUDA_VISIBLE_DEVICES: launch.gpuIds },
    );
  }
  // The configuration is printed with --print_config (in full) or --log_level debug (what differs from the
  // defaults); a plain run starts with its work.
  if (resolved.config.log_level === "debug") output.err(formatResolvedConfig(resolved, { changedOnly: true }));
  const result = await runTraining(resolved, { out: (t) => { output.out(t); }, err: (t) => { output.err(t); }, progress: progressStream(output) }, objective);
  // In a distributed job rank 0 reports; the other ranks end quietly (with the same status).
  if (processPlace().rank !== 0) return result.interrupted === undefined ? 0 : signalExitCode(result.interrupted.signal);
  if (result.interrupted !== undefined) {
    output.err(
      `tuna ${command}: interrupted (${result.interrupted.signal}) after step ${result.globalStep}; saved ${result.interrupted.checkpoint}. ` +
        "Resume with the same command plus --resume_from_checkpoint true.",
    );
    return signalExitCode(result.interrupted.signal);
  }
  output.out(
    `done: ${result.globalStep} steps, train_loss ${result.trainLoss.toFixed(4)}` +
      (result.evalLoss === undefined ? "" : `, eval_loss ${result.evalLoss.toFixed(4)}`) +
      `; adapter and logs in ${result.outputDir}`,
  );
  return 0;
}

/** The real stderr when tuna runs as a process; a line-per-write stream for injected outputs (tests). */
export function progressStream(output: CliOutput): ProgressStream {
  if (output === processOutput) return process.stderr;
  return { write: (text: string) => { output.err(text.replace(/\n$/, "")); }, isTTY: false };
}

/** GPUs the driver shows this process (undefined without a driver or when it fails: nothing to check then). */
function visibleGpuCount(): number | undefined {
  const cuda = findCudaLibraries().cuda;
  if (!cuda.found || cuda.path === undefined) return undefined;
  const probe = probeDriver(cuda.path);
  return probe.ok ? probe.devices.length : undefined;
}
