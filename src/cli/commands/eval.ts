// `tuna eval <model> --dataset_name data.jsonl [--adapter DIR]`: the token-mean loss and perplexity
// of a model (optionally with a PEFT adapter) over a pre-tokenized dataset, as transformers computes it.
import { parseArgs } from "node:util";
import { normalizeFlags } from "../flags.ts";
import { TunaError, errorMessage } from "../../util/errors.ts";
import { createBackend, type DeviceChoice } from "../../backend/factory.ts";
import { readPretokenizedJsonl } from "../../data/pretokenized.ts";
import { batchFromRows } from "../../data/batch.ts";
import { openModelForUse } from "../../train/open-model.ts";
import { createLlamaModel, forward, freeBatch, uploadBatch } from "../../model/llama/model.ts";
import type { CliOutput } from "../output.ts";
import { quantizeFromFlags } from "../quant-flags.ts";

const HELP = `usage: tuna eval <model folder | hub id> --dataset_name FILE.jsonl [options]

Computes the loss (mean over all trained tokens of the dataset) and perplexity of a model.
The dataset is JSONL with "input_ids" and optional "labels" (same length, -100 = ignored; the
shift to next-token targets happens inside) and "attention_mask".
  --dataset_name FILE            pre-tokenized JSONL
  --adapter DIR                  a PEFT LoRA adapter folder to apply
  --per_device_eval_batch_size N rows per forward pass (default 8)
  --device auto|cpu|cuda         default auto
  --bf16                         keep base weights in bf16 (default f32 on CPU)
  --use_4bit_quantization        quantize the linear layers to 4-bit at load (QLoRA base)
  --bnb_4bit_quant_type nf4|fp4  4-bit code (default nf4)
  --use_nested_quant             double-quantize the 4-bit absmax
  --use_8bit_quantization        LLM.int8 rowwise weights
  --revision REV                 hub revision when <model> is a hub id
  --json                         print one JSON object`;

export async function evalCommand(args: string[], output: CliOutput): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: normalizeFlags(args),
      allowPositionals: true,
      options: {
        dataset_name: { type: "string" },
        adapter: { type: "string" },
        per_device_eval_batch_size: { type: "string", default: "8" },
        device: { type: "string", default: "auto" },
        bf16: { type: "boolean" },
        use_4bit_quantization: { type: "boolean" },
        bnb_4bit_quant_type: { type: "string", default: "nf4" },
        use_nested_quant: { type: "boolean" },
        use_8bit_quantization: { type: "boolean" },
        revision: { type: "string" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    throw new TunaError("CONFIG_UNKNOWN", `${errorMessage(e)}\n\n${HELP}`, { cause: e });
  }
  const { values, positionals } = parsed;
  if (values.help === true) {
    output.out(HELP);
    return 0;
  }
  const problems: string[] = [];
  if (positionals.length !== 1) problems.push("give exactly one model (folder or hub id)");
  if (values.dataset_name === undefined) problems.push("--dataset_name is required");
  const batchSize = Number(values.per_device_eval_batch_size);
  if (!Number.isInteger(batchSize) || batchSize < 1) problems.push(`--per_device_eval_batch_size must be a positive integer, got "${values.per_device_eval_batch_size}"`);
  const device = values.device;
  if (device !== "auto" && device !== "cpu" && device !== "cuda") problems.push(`--device must be auto, cpu or cuda, got "${device}"`);
  const quantType = values.bnb_4bit_quant_type;
  if (quantType !== "nf4" && quantType !== "fp4") problems.push(`--bnb_4bit_quant_type must be nf4 or fp4, got "${quantType}"`);
  if (values.use_4bit_quantization === true && values.use_8bit_quantization === true) problems.push("--use_4bit_quantization and --use_8bit_quantization exclude each other");
  if (problems.length > 0) throw new TunaError("CONFIG_INVALID", `${problems.join("; ")}.\n\n${HELP}`);

  const rows = await readPretokenizedJsonl(values.dataset_name!);
  const backend = createBackend(device as DeviceChoice, (m) => {
    output.err(m);
  });
  const opened = await openModelForUse(backend, positionals[0]!, {
    baseDtype: values.bf16 === true ? "bf16" : "f32",
    quantize: quantizeFromFlags(values),
    ...(values.adapter === undefined ? {} : { adapterDir: values.adapter }),
    ...(values.revision === undefined ? {} : { revision: values.revision }),
    onNotice: (m) => {
      output.err(m);
    },
  });
  const model = createLlamaModel(backend, opened.params, { checkpointing: false, seed: 0 });
  let lossSum = 0;
  let tokens = 0;
  for (let start = 0; start < rows.length; start += batchSize) {
    const batch = uploadBatch(model, batchFromRows(rows.slice(start, start + batchSize)));
    const r = await forward(model, batch);
    lossSum += r.lossSum;
    tokens += r.tokens;
    freeBatch(model, batch);
  }
  if (tokens === 0) throw new TunaError("CONFIG_INVALID", `${values.dataset_name!}: no token has a label other than -100, so there is no loss to compute.`);
  const loss = lossSum / tokens;
  const result = { eval_loss: loss, perplexity: Math.exp(loss), tokens, rows: rows.length, model: opened.dir, adapter: values.adapter ?? null };
  output.out(
    values.json === true
      ? JSON.stringify(result, null, 2)
      : `eval_loss ${loss.toFixed(6)}  perplexity ${result.perplexity.toFixed(4)}  (${tokens} trained tokens in ${rows.length} rows)`,
  );
  return 0;
}
