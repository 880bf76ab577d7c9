// `tuna merge <base> --adapter DIR --output_dir OUT`: writes the base model with a PEFT LoRA adapter
// merged in as a Hugging Face safetensors folder (a 4-bit / 8-bit base comes out dequantized).
import { TunaError } from "../../util/errors.ts";
import { resolveModelPath } from "../../hub/resolve.ts";
import { DEFAULT_MAX_SHARD_BYTES } from "../../io/safetensors/checkpoint.ts";
import { MERGE_DTYPES, mergeAdapter, type MergeDtype } from "../../lora/merge.ts";
import { throttledProgress, type CliOutput } from "../output.ts";
import { parseFlags } from "./generate.ts";

const HELP = `usage: tuna merge <base model folder | hub id> --adapter DIR --output_dir OUT [options]

Writes the base model with the LoRA adapter merged in (W + scale * B @ A, as PEFT's
merge_and_unload; a DoRA adapter's rows are then rescaled to magnitude / row norm) as a Hugging Face model folder: config.json, generation_config.json,
model.safetensors (or shards + index) and the tokenizer (the adapter's, else the base's).
A bitsandbytes 4-bit or 8-bit base is dequantized; the output is not quantized.
  --adapter DIR             the PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors)
  --output_dir OUT          the folder to write; it must not exist or be empty
  --dtype D                 bfloat16, float16 or float32 (default: the base's torch_dtype;
                            bfloat16 for a quantized base)
  --max_shard_size SIZE     largest weight file, e.g. 5GB (default), 500MB, 2GiB, or bytes
  --overwrite               replace an existing non-empty OUT
  --revision REV            hub revision when <base> is a hub id
  --json                    print one JSON object`;

const OPTIONS = {
  adapter: { type: "string" },
  output_dir: { type: "string" },
  dtype: { type: "string" },
  max_shard_size: { type: "string" },
  overwrite: { type: "boolean" },
  revision: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

const UNITS: Record<string, number> = { "": 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };

/** transformers' max_shard_size: bytes, or a number with KB/MB/GB (powers of 10) or KiB/MiB/GiB (powers of 2). */
export function parseShardSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = UNITS[(m?.[2] ?? "").toLowerCase()];
  if (m?.[1] === undefined || unit === undefined) return undefined;
  const bytes = Math.floor(Number(m[1]) * unit);
  return bytes > 0 ? bytes : undefined;
}

function isMergeDtype(s: string): s is MergeDtype {
  return (MERGE_DTYPES as readonly string[]).includes(s);
}

export async function mergeCommand(args: string[], output: CliOutput): Promise<number> {
  const { values, positionals } = parseFlags(args, OPTIONS, HELP);
  if (values.help === true) {
    output.out(HELP);
    return 0;
  }
  const problems: string[] = [];
  if (positionals.length !== 1) problems.push("give exactly one base model (folder or hub id)");
  if (values.adapter === undefined) problems.push("--adapter is required");
  if (values.output_dir === undefined) problems.push("--output_dir is required");
  const dtype = values.dtype;
  if (dtype !== undefined && !isMergeDtype(dtype)) problems.push(`--dtype must be one of ${MERGE_DTYPES.join(", ")}, got "${dtype}"`);
  const maxShardBytes = values.max_shard_size === undefined ? DEFAULT_MAX_SHARD_BYTES : parseShardSize(values.max_shard_size);
  if (maxShardBytes === undefined) problems.push(`--max_shard_size must be a size such as 5GB, 500MB or 2GiB, got "${values.max_shard_size ?? ""}"`);
  if (problems.length > 0) throw new TunaError("CONFIG_INVALID", `${problems.join("; ")}.\n\n${HELP}`);

  const base = await resolveModelPath(positionals[0]!, values.revision === undefined ? {} : { revision: values.revision });
  const result = await mergeAdapter(base, {
    adapterDir: values.adapter!,
    outputDir: values.output_dir!,
    ...(dtype !== undefined && isMergeDtype(dtype) ? { dtype } : {}),
    ...(maxShardBytes === undefined ? {} : { maxShardBytes }),
    overwrite: values.overwrite === true,
    onTensor: throttledProgress(output, "merge"),
  });
  if (values.json === true) {
    output.out(JSON.stringify({ base, adapter: values.adapter, ...result }, null, 2));
    return 0;
  }
  const notes = [
    `${result.weightFiles.filter((f) => f.endsWith(".safetensors")).length} weight file(s)`,
    `vocabulary ${result.vocabSize}`,
    ...(result.tokenRows > 0 ? [`${result.tokenRows} trained token row(s)`] : []),
    ...(result.dequantized === null ? [] : [`dequantized from bitsandbytes ${result.dequantized}`]),
    result.tokenizerFrom === null ? "no tokenizer files found" : `tokenizer from ${result.tokenizerFrom}`,
  ];
  output.out(`merged ${result.mergedModules} LoRA module(s) into ${result.outputDir} (${result.dtype}; ${notes.join(", ")})`);
  if (result.baseMismatch !== null) output.err(`warning: ${result.baseMismatch}`);
  if (result.droppedTensors.length > 0) {
    output.err(`note: ${result.droppedTensors.length} base tensor(s) no module uses were not written (e.g. ${result.droppedTensors.slice(0, 3).join(", ")}).`);
  }
  return 0;
}
