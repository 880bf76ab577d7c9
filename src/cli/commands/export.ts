// `tuna export <model> --format gguf --output FILE [--adapter DIR] [--outtype T]`: the model (with the
// adapter merged in) as one GGUF file for llama.cpp, Ollama, LM Studio and the like.
import { TunaError } from "../../util/errors.ts";
import { resolveModelPath } from "../../hub/resolve.ts";
import { exportGguf } from "../../gguf/export.ts";
import { exportGgufLora } from "../../gguf/export-lora.ts";
import { GGUF_OUT_TYPES, type GgufOutType } from "../../gguf/tensor-types.ts";
import { throttledProgress, type CliOutput } from "../output.ts";
import { parseFlags } from "./generate.ts";

const HELP = `usage: tuna export <base model folder | hub id> --format gguf --output FILE [options]

Writes the model, with a PEFT LoRA adapter merged in when --adapter is given (as \`tuna merge\` does),
as one GGUF v3 file that llama.cpp loads: architecture metadata, the tokenizer and chat template, and
the weights. Architectures: Llama (and Llama 3.x RoPE), Mistral, Qwen2/2.5, Qwen3, Gemma 2, Gemma 3, Phi-3/4.
  --format gguf             the output format (GGUF is the one there is)
  --output FILE             the .gguf file to write; it appears only when complete
  --adapter DIR             a PEFT LoRA/DoRA adapter folder to merge in first
  --adapter_only            with --adapter: write the adapter alone as a GGUF LoRA adapter, for
                            llama.cpp's --lora on top of the base's GGUF (LoRA, rsLoRA and rank/alpha
                            patterns; not DoRA or trained embeddings); --outtype f32, f16, bf16 or q8_0
  --outtype T               f16 (default), bf16, f32, q8_0 as llama.cpp's converter writes them, or
                            q4_k_m: llama.cpp's Q4_K_M mixture (Q4_K with Q6_K for the output,
                            half of attn_v and ffn_down), byte for byte what llama-quantize makes
  --name NAME               general.name in the file (default: the model folder's name)
  --overwrite               replace an existing FILE
  --revision REV            hub revision when <base> is a hub id
  --json                    print one JSON object`;

const OPTIONS = {
  format: { type: "string" },
  output: { type: "string" },
  adapter: { type: "string" },
  adapter_only: { type: "boolean" },
  outtype: { type: "string" },
  name: { type: "string" },
  overwrite: { type: "boolean" },
  revision: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

function isOutType(s: string): s is GgufOutType {
  return (GGUF_OUT_TYPES as readonly string[]).includes(s);
}

export async function exportCommand(args: string[], output: CliOutput): Promise<number> {
  const { values, positionals } = parseFlags(args, OPTIONS, HELP);
  if (values.help === true) {
    output.out(HELP);
    return 0;
  }
  const problems: string[] = [];
  if (positionals.length !== 1) problems.push("give exactly one base model (folder or hub id)");
  if (values.format === undefined) problems.push("--format is required (gguf)");
  else if (values.format.toLowerCase() !== "gguf") problems.push(`--format ${values.format} is not available; the format tuna exports is gguf (for a Hugging Face folder use \`tuna merge\`)`);
  if (values.output === undefined) problems.push("--output is required");
  const outType = (values.outtype ?? "f16").toLowerCase();
  if (!isOutType(outType)) problems.push(`--outtype must be one of ${GGUF_OUT_TYPES.join(", ")}, got "${values.outtype ?? ""}"`);
  if (values.adapter_only === true && values.adapter === undefined) problems.push("--adapter_only needs --adapter DIR");
  if (problems.length > 0 || !isOutType(outType)) throw new TunaError("CONFIG_INVALID", `${problems.join("; ")}.\n\n${HELP}`);

  const base = await resolveModelPath(positionals[0]!, values.revision === undefined ? {} : { revision: values.revision });
  if (values.adapter_only === true) {
    const lora = await exportGgufLora(base, {
      adapterDir: values.adapter!,
      output: values.output!,
      outType,
      overwrite: values.overwrite === true,
      ...(values.name === undefined ? {} : { name: values.name }),
    });
    if (values.json === true) output.out(JSON.stringify({ base, adapter: values.adapter, outtype: outType, ...lora }, null, 2));
    else output.out(`wrote ${lora.output} (${(lora.bytes / 2 ** 20).toFixed(1)} MiB; GGUF LoRA adapter for ${lora.architecture}, ${lora.modules} module(s), alpha ${lora.alpha})`);
    return 0;
  }
  const result = await exportGguf(base, {
    output: values.output!,
    outType,
    overwrite: values.overwrite === true,
    onTensor: throttledProgress(output, "export"),
    ...(values.adapter === undefined ? {} : { adapterDir: values.adapter }),
    ...(values.name === undefined ? {} : { name: values.name }),
  });
  if (values.json === true) {
    output.out(JSON.stringify({ base, adapter: values.adapter ?? null, outtype: outType, ...result }, null, 2));
    return 0;
  }
  const types = Object.entries(result.types)
    .map(([t, n]) => `${n} ${t}`)
    .join(", ");
  const merged = values.adapter === undefined ? "" : `, ${result.mergedModules} LoRA module(s) merged`;
  output.out(`wrote ${result.output} (${(result.bytes / 2 ** 20).toFixed(1)} MiB; ${result.architecture}, ${result.tensors} tensors: ${types}; ${result.tokenizer} tokenizer${merged})`);
  if (result.baseMismatch !== null) output.err(`warning: ${result.baseMismatch}`);
  for (const note of result.notes) output.err(`note: ${note}`);
  return 0;
}
