// Reads an accelerate config file (`accelerate config` / peft examples/sft/configs/*.yaml) into the
// LaunchConfig tuna needs: process count, mixed precision and the sharding kind. Other keys are ignored.
import { resolve } from "node:path";
import { z } from "zod";
import { TunaError } from "../util/errors.ts";
import { parseMapping, readTextFile } from "./file.ts";

export type MixedPrecision = "no" | "fp16" | "bf16";
export type OffloadDevice = "none" | "cpu" | "nvme";
export type FsdpShardingStrategy = "FULL_SHARD" | "SHARD_GRAD_OP" | "NO_SHARD" | "HYBRID_SHARD" | "HYBRID_SHARD_ZERO2";

export type Sharding =
  | { kind: "none"; offloadParams: false; offloadOptimizer: false }
  /** MULTI_GPU: DistributedDataParallel, every process holds a full replica. */
  | { kind: "ddp"; offloadParams: false; offloadOptimizer: false }
  | {
      kind: "zero";
      stage: 0 | 1 | 2 | 3;
      offloadParams: boolean;
      offloadOptimizer: boolean;
      offloadParamDevice: OffloadDevice;
      offloadOptimizerDevice: OffloadDevice;
      /** zero3_init_flag: build the model already partitioned instead of fully on each process. */
      zero3Init: boolean;
    }
  | {
      kind: "fsdp";
      strategy: FsdpShardingStrategy;
      /** FSDP's CPU offload moves parameters and gradients, so the optimizer step runs on the CPU too. */
      offloadParams: boolean;
      offloadOptimizer: boolean;
      cpuRamEfficientLoading: boolean;
      useOrigParams: boolean;
    };

export interface LaunchConfig {
  numProcesses: number;
  numMachines: number;
  /** This machine's index in a multi-machine job (machine_rank). */
  machineRank: number;
  /** Rank 0's address and port (main_process_ip / main_process_port), when the file says. */
  mainProcessIp: string | undefined;
  mainProcessPort: number | undefined;
  /** gpu_ids as written ("all", "0,1"), when the file says. */
  gpuIds: string | undefined;
  /** undefined when the file does not say. */
  mixedPrecision: MixedPrecision | undefined;
  sharding: Sharding;
  /** Absolute path of the accelerate file. */
  source: string;
}

const FSDP_STRATEGIES = ["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "HYBRID_SHARD_ZERO2"] as const;
const offloadDevice = z.enum(["none", "cpu", "nvme"]);

// Only the keys tuna reads are described; every other key passes through unchecked.
const AccelerateFile = z.looseObject({
  distributed_type: z.string().optional(),
  num_processes: z.number().int().min(1).optional(),
  num_machines: z.number().int().min(1).optional(),
  machine_rank: z.number().int().min(0).optional(),
  main_process_ip: z.string().nullish(),
  main_process_port: z.number().int().min(1).max(65535).nullish(),
  gpu_ids: z.union([z.string(), z.number()]).nullish(),
  mixed_precision: z.enum(["no", "fp16", "bf16", "fp8"]).optional(),
  deepspeed_config: z
    .looseObject({
      zero_stage: z.number().int().min(0).max(3).optional(),
      offload_optimizer_device: offloadDevice.optional(),
      offload_param_device: offloadDevice.optional(),
      zero3_init_flag: z.boolean().optional(),
      deepspeed_config_file: z.string().optional(),
    })
    .optional(),
  fsdp_config: z
    .looseObject({
      fsdp_version: z.number().int().min(1).max(2).optional(),
      // accelerate writes a name; older versions wrote its number (1 = FULL_SHARD ... 5 = HYBRID_SHARD_ZERO2).
      fsdp_sharding_strategy: z.union([z.enum(FSDP_STRATEGIES), z.number().int().min(1).max(5)]).optional(),
      fsdp_reshard_after_forward: z.boolean().optional(),
      fsdp_offload_params: z.boolean().optional(),
      fsdp_cpu_ram_efficient_loading: z.boolean().optional(),
      fsdp_use_orig_params: z.boolean().optional(),
    })
    .optional(),
});

type AccelerateFile = z.infer<typeof AccelerateFile>;

function valueAt(data: unknown, path: readonly PropertyKey[]): unknown {
  let current = data;
  for (const key of path) {
    if (current === null || typeof current !== "object") return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

function zeroSharding(file: AccelerateFile, path: string): Sharding {
  const ds = file.deepspeed_config ?? {};
  if (ds.deepspeed_config_file !== undefined) {
    throw new TunaError(
      "UNSUPPORTED",
      `accelerate config ${path} points to a DeepSpeed JSON (deepspeed_config_file); tuna reads only the inline form. ` +
        "Put zero_stage, offload_optimizer_device and offload_param_device under deepspeed_config instead.",
    );
  }
  const offloadParamDevice = ds.offload_param_device ?? "none";
  const offloadOptimizerDevice = ds.offload_optimizer_device ?? "none";
  return {
    kind: "zero",
    // accelerate's DeepSpeedPlugin defaults to stage 2.
    stage: (ds.zero_stage ?? 2) as 0 | 1 | 2 | 3,
    offloadParams: offloadParamDevice !== "none",
    offloadOptimizer: offloadOptimizerDevice !== "none",
    offloadParamDevice,
    offloadOptimizerDevice,
    zero3Init: ds.zero3_init_flag ?? false,
  };
}

function fsdpSharding(file: AccelerateFile): Sharding {
  const fsdp = file.fsdp_config ?? {};
  let strategy: FsdpShardingStrategy;
  const given = fsdp.fsdp_sharding_strategy;
  if (typeof given === "number") strategy = FSDP_STRATEGIES[given - 1] ?? "FULL_SHARD";
  else if (given !== undefined) strategy = given;
  // FSDP2 has no strategy names: resharding after forward is FULL_SHARD, keeping params is SHARD_GRAD_OP.
  else strategy = fsdp.fsdp_reshard_after_forward === false ? "SHARD_GRAD_OP" : "FULL_SHARD";
  const offload = fsdp.fsdp_offload_params ?? false;
  return {
    kind: "fsdp",
    strategy,
    offloadParams: offload,
    offloadOptimizer: offload,
    cpuRamEfficientLoading: fsdp.fsdp_cpu_ram_efficient_loading ?? false,
    useOrigParams: fsdp.fsdp_use_orig_params ?? false,
  };
}

/** Reads an accelerate config file; a relative `path` is taken from the process's working directory. */
export async function readAccelerateConfig(givenPath: string): Promise<LaunchConfig> {
  const path = resolve(givenPath);
  const raw = parseMapping(await readTextFile(path, "accelerate config"), path, "accelerate config");
  const parsed = AccelerateFile.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => {
      const key = issue.path.map(String).join(".");
      const value = valueAt(raw, issue.path);
      return `  - ${key} = ${value === undefined ? "(missing)" : JSON.stringify(value)}: ${issue.message}`;
    });
    throw new TunaError("FILE_FORMAT", `accelerate config ${path} has invalid values:\n${lines.join("\n")}`);
  }
  const file = parsed.data;
  if (file.mixed_precision === "fp8") {
    throw new TunaError("UNSUPPORTED", `accelerate config ${path}: mixed_precision fp8 is not supported; use bf16, fp16 or no.`);
  }
  const numProcesses = file.num_processes ?? 1;
  const distributedType = file.distributed_type?.toUpperCase() ?? (numProcesses > 1 ? "MULTI_GPU" : "NO");
  let sharding: Sharding;
  switch (distributedType) {
    case "NO":
      sharding = { kind: "none", offloadParams: false, offloadOptimizer: false };
      break;
    case "MULTI_GPU":
      sharding = { kind: "ddp", offloadParams: false, offloadOptimizer: false };
      break;
    case "DEEPSPEED":
      sharding = zeroSharding(file, path);
      break;
    case "FSDP":
      sharding = fsdpSharding(file);
      break;
    default:
      throw new TunaError(
        "UNSUPPORTED",
        `accelerate config ${path}: distributed_type ${distributedType} is not supported; tuna runs NO, MULTI_GPU, DEEPSPEED and FSDP.`,
      );
  }
  const numMachines = file.num_machines ?? 1;
  const machineRank = file.machine_rank ?? 0;
  if (numProcesses % numMachines !== 0 || machineRank >= numMachines) {
    throw new TunaError(
      "CONFIG_INVALID",
      `accelerate config ${path}: num_processes ${numProcesses} over num_machines ${numMachines} (machine_rank ${machineRank}) is not an even split with this machine among them.`,
    );
  }
  return {
    numProcesses,
    numMachines,
    machineRank,
    mainProcessIp: file.main_process_ip ?? undefined,
    mainProcessPort: file.main_process_port ?? undefined,
    gpuIds: file.gpu_ids === undefined || file.gpu_ids === null ? undefined : String(file.gpu_ids),
    mixedPrecision: file.mixed_precision,
    sharding,
    source: path,
  };
}

/** One line for printouts: "2 processes on 1 machine, mixed_precision bf16, ZeRO stage 3 (no offload, zero3_init)". */
export function describeLaunch(launch: LaunchConfig): string {
  const s = launch.sharding;
  let sharding: string;
  if (s.kind === "none") sharding = "no sharding";
  else if (s.kind === "ddp") sharding = "DDP (full replica per process)";
  else if (s.kind === "zero") {
    const offload = [s.offloadParams ? `params to ${s.offloadParamDevice}` : "", s.offloadOptimizer ? `optimizer to ${s.offloadOptimizerDevice}` : ""]
      .filter((x) => x.length > 0)
      .join(", ");
    sharding = `DeepSpeed ZeRO stage ${s.stage} (${offload.length > 0 ? `offload ${offload}` : "no offload"}${s.zero3Init ? ", zero3_init" : ""})`;
  } else {
    sharding = `FSDP ${s.strategy} (${s.offloadParams ? "CPU offload" : "no offload"}${s.cpuRamEfficientLoading ? ", cpu_ram_efficient_loading" : ""})`;
  }
  const processes = `${launch.numProcesses} process${launch.numProcesses === 1 ? "" : "es"}`;
  const machines = `${launch.numMachines} machine${launch.numMachines === 1 ? "" : "s"}`;
  return `${processes} on ${machines}, mixed_precision ${launch.mixedPrecision ?? "(unset)"}, ${sharding}`;
}
