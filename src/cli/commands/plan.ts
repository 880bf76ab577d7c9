// `tuna plan <tuna train flags> [--budget_gib N] [--world_size N] [--json]`: the predicted peak device memory of
// each rank of that training run, part by part, whether it fits the GPU (or the budget given), and which single
// change would make it fit when it does not.
import { TunaError } from "../../util/errors.ts";
import { PRESET_NAMES } from "../../hf/presets.ts";
import { takeOwnFlags } from "../flags.ts";
import type { CliOutput } from "../output.ts";
import { parseTrainArgs, type TrainConfig } from "../../config/index.ts";
import { findCudaLibraries } from "../../gpu/discover.ts";
import { probeDriver } from "../../gpu/driver-probe.ts";
import { planTraining, type PlanTarget } from "../../train/plan/from-config.ts";
import { planTargetFor } from "../../train/plan/target.ts";
import type { MemoryPlan } from "../../train/plan/memory.ts";
import { withDpoDefaults } from "./dpo-config.ts";

const HELP = `usage: tuna plan [tuna train flags] [--dpo] [--budget_gib N] [--world_size N] [--runtime_gib N] [--json]

Predicts the peak device memory of rank 0 of the training run those flags describe (model folder or preset
shape, LoRA/QLoRA, batch, sequence length, checkpointing, --config_file's processes and sharding), part by
part, and says which single change fits a smaller budget.
  --budget_gib N     the memory to fit (default: the GPU's, when one is found and --device is not cpu)
  --world_size N     ranks of the job (default: the --config_file's num_processes, else 1)
  --runtime_gib N    memory outside tuna's tensors on a GPU: CUDA context and libraries (default 0.5)
  --dpo              plan the run as tuna dpo would make it (two sequences per pair, DPO's defaults)
  --json             one JSON object
Presets (--model_name_or_path NAME without a folder of that name): ${PRESET_NAMES.filter((n) => !n.startsWith("tiny-")).join(", ")}
and the tiny test shapes.`;

const DEFAULT_RUNTIME_GIB = 0.5;
const GIB = 2 ** 30;

function positiveNumber(values: Map<string, string | true>, name: string, integer: boolean): number | undefined {
  const raw = values.get(name);
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (raw === true || !Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    throw new TunaError("CONFIG_INVALID", `--${name} ${String(raw)}: expected a ${integer ? "whole number" : "number"} > 0.`);
  }
  return n;
}

/** The first GPU the driver shows, if any. */
function firstGpu(): { name: string; totalBytes: number } | undefined {
  const cuda = findCudaLibraries().cuda;
  if (!cuda.found || cuda.path === undefined) return undefined;
  const probe = probeDriver(cuda.path);
  const gpu = probe.ok ? probe.devices[0] : undefined;
  return gpu === undefined ? undefined : { name: gpu.name, totalBytes: gpu.totalMemoryBytes };
}

const gib = (bytes: number): string => (bytes / GIB).toFixed(2);

interface Alternative {
  change: string;
  total: number;
}

/** Single changes that lower the peak, each planned anew. */
function alternatives(c: TrainConfig, plan: (c: TrainConfig) => MemoryPlan): Alternative[] {
  const out: Alternative[] = [];
  if (!c.gradient_checkpointing) out.push({ change: "--gradient_checkpointing", total: plan({ ...c, gradient_checkpointing: true }).total });
  for (let b = c.per_device_train_batch_size >> 1; b >= 1; b >>= 1) {
    out.push({ change: `--per_device_train_batch_size ${b} --gradient_accumulation_steps ${Math.ceil((c.per_device_train_batch_size * c.gradient_accumulation_steps) / b)}`, total: plan({ ...c, per_device_train_batch_size: b, gradient_accumulation_steps: Math.ceil((c.per_device_train_batch_size * c.gradient_accumulation_steps) / b) }).total });
  }
  if (c.use_peft_lora && !c.use_4bit_quantization && !c.use_8bit_quantization) {
    out.push({ change: "--use_4bit_quantization --use_nested_quant (QLoRA)", total: plan({ ...c, use_4bit_quantization: true, use_nested_quant: true }).total });
  }
  if (!c.bf16) out.push({ change: "--bf16", total: plan({ ...c, bf16: true }).total });
  return out;
}

export async function planCommand(args: string[], output: CliOutput): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    output.out(HELP);
    return 0;
  }
  const { rest, values } = takeOwnFlags(args, { bools: ["json", "dpo"], values: ["budget_gib", "world_size", "runtime_gib"] }, HELP);
  const dpo = values.get("dpo") === true;
  const parsed = await parseTrainArgs(rest);
  const resolved = dpo ? withDpoDefaults(parsed) : parsed;
  const c = resolved.config;
  const gpu = c.device === "cpu" ? undefined : firstGpu();
  if (c.device === "cuda" && gpu === undefined) output.err("note: no GPU found here; planning for --device cuda anyway (give --budget_gib to check a fit).");
  const device = c.device === "cpu" || (c.device === "auto" && gpu === undefined) ? "cpu" : "cuda";
  const runtimeBytes = (positiveNumber(values, "runtime_gib", false) ?? DEFAULT_RUNTIME_GIB) * GIB;
  const world = positiveNumber(values, "world_size", true);
  const { target, source, notes } = await planTargetFor(c, device, runtimeBytes);
  const withWorld: PlanTarget = { ...target, ...(world === undefined ? {} : { world }), objective: dpo ? "dpo" : "sft" };
  const plan = (config: TrainConfig): MemoryPlan => planTraining(config, resolved.launch, withWorld);
  const result = plan(c);
  const budgetGib = positiveNumber(values, "budget_gib", false);
  const budget = budgetGib !== undefined ? budgetGib * GIB : gpu?.totalBytes;
  const ranks = withWorld.world ?? resolved.launch?.numProcesses ?? 1;
  const options = budget !== undefined && result.total > budget ? alternatives(c, plan) : [];

  if (values.get("json") === true) {
    output.out(JSON.stringify({ model: source, device, ranks, parts: result.parts, totalBytes: result.total, budgetBytes: budget ?? null, fits: budget === undefined ? null : result.total <= budget, alternatives: options, notes }, null, 2));
    return 0;
  }
  const cfg = target.cfg;
  const lines = [
    `tuna plan: ${source} (${cfg.numLayers} layers, hidden ${cfg.hiddenSize}, vocab ${cfg.vocabSize}), ${c.use_peft_lora ? (c.use_4bit_quantization || cfg.quantization?.loadIn4bit === true ? "QLoRA" : "LoRA") : "full fine-tuning"} on ${device}${gpu === undefined ? "" : ` (${gpu.name}, ${gib(gpu.totalBytes)} GiB)`}, rank 0 of ${ranks}`,
    `peak device memory, predicted (GiB):`,
  ];
  const width = Math.max(...result.parts.map((p) => p.name.length));
  for (const p of result.parts) lines.push(`  ${p.name.padEnd(width)}  ${gib(p.bytes).padStart(7)}  ${p.note}`);
  lines.push(`  ${"total".padEnd(width)}  ${gib(result.total).padStart(7)}`);
  if (budget !== undefined) {
    lines.push(result.total <= budget ? `fits in ${gib(budget)} GiB (${gib(budget - result.total)} GiB to spare).` : `does not fit in ${gib(budget)} GiB (${gib(result.total - budget)} GiB over). Single changes:`);
    for (const a of options) lines.push(`  ${a.total <= budget ? "fits " : "over "} ${gib(a.total).padStart(7)}  ${a.change}`);
    if (result.total > budget && options.length === 0) lines.push("  none of tuna's switches is left to turn: shorten --max_seq_length, lower --lora_r, or shard over more GPUs (--config_file with ZeRO-3).");
  }
  for (const n of notes) lines.push(`note: ${n}`);
  lines.push("Tokens/s is not predicted yet; the memory model is checked against the CPU backend's exact count and GPU measurements (docs/perf-log.md).");
  output.out(lines.join("\n"));
  return 0;
}
