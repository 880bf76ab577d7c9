// `tuna eval <model> --dataset_name DATA [--adapter DIR]`: the token-mean loss and perplexity of a model
// (optionally with a PEFT adapter) over a pre-tokenized JSONL file, as transformers computes it, or over any
// dataset `tuna train` reads, prepared as it prepares it (per split; src/train/eval-dataset.ts).
import { parseArgs } from "node:util";
import { normalizeFlags, takeOwnFlags } from "../flags.ts";
import { TunaError, errorMessage } from "../../util/errors.ts";
import { createBackend, type DeviceChoice } from "../../backend/factory.ts";
import { readPretokenizedJsonl } from "../../data/pretokenized.ts";
import { batchFromRows } from "../../data/batch.ts";
import { openModelForUse } from "../../train/open-model.ts";
import { createCausalLm, forward, freeBatch, uploadBatch } from "../../model/causal-lm/model.ts";
import type { CliOutput } from "../output.ts";
import { quantizeFromFlags } from "../quant-flags.ts";
import { open } from "node:fs/promises";
import { parseTrainArgs } from "../../config/index.ts";
import { evaluateDataset } from "../../train/eval-dataset.ts";


const HELP = `usage: tuna eval <model folder | hub id> --dataset_name DATA [options]   (the model first)

Computes the loss (mean over all trained tokens) and perplexity of a model. DATA is either pre-tokenized
JSONL ("input_ids", optional "labels" (-100 = ignored; the shift happens inside) and "attention_mask"), or
any dataset tuna train reads (a file, folder or hub id, any format): it is prepared as tuna train prepares
it, with the same flags (--chat_template_format, --assistant_only_loss, --max_seq_length, --splits
(default train,test), --packing off by default...), and each split is reported.
  --dataset_name DATA            pre-tokenized JSONL, or a dataset as tuna train takes it
  --metric exact_match|contains  also generate (greedy) for each example's prompt and compare with its
                                 reference answer (last assistant turn, or the completion)
  --max_new_tokens N             generation length for --metric (default 64)
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

/** Whether the file is JSONL whose first row holds input_ids (the pre-tokenized form). */
async function isPretokenized(path: string): Promise<boolean> {
  if (!/\.jsonl$/i.test(path)) return false;
  let handle;
  try {
    handle = await open(path, "r");
  } catch {
    return true; // the pre-tokenized reader names the missing file
  }
  try {
    const head = Buffer.alloc(64 * 1024);
    const { bytesRead } = await handle.read(head, 0, head.length, 0);
    const first = head.subarray(0, bytesRead).toString("utf8").split("\n").find((l) => l.trim() !== "");
    if (first === undefined) return true;
    try {
      const row = JSON.parse(first) as unknown;
      return typeof row === "object" && row !== null && "input_ids" in row;
    } catch {
      return true; // the pre-tokenized reader reports the bad line
    }
  } finally {
    await handle.close();
  }
}

/** Any dataset as tuna train reads it: each split's loss and perplexity, and the generation metric if asked. */
async function evalDataset(model: string, args: string[], output: CliOutput): Promise<number> {
  // tuna eval's own flags; --splits too, since any split may be evaluated (tuna train insists on a training split).
  const { rest, values } = takeOwnFlags(args, { bools: ["json"], values: ["adapter", "metric", "max_new_tokens", "splits"] }, HELP);
  const str = (name: string): string | undefined => {
    const v = values.get(name);
    return typeof v === "string" ? v : undefined;
  };
  const adapter = str("adapter");
  const metric = str("metric");
  if (metric !== undefined && metric !== "exact_match" && metric !== "contains") throw new TunaError("CONFIG_INVALID", `--metric must be exact_match or contains, got "${metric}".`);
  const maxNewTokensText = str("max_new_tokens") ?? "64";
  const maxNewTokens = Number(maxNewTokensText);
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new TunaError("CONFIG_INVALID", `--max_new_tokens must be a positive integer, got "${maxNewTokensText}".`);
  const splitsValue = str("splits");
  const resolved = await parseTrainArgs(["--model_name_or_path", model, ...rest]);
  const splits = splitsValue === undefined ? resolved.config.splits : splitsValue.split(",").map((x) => x.trim()).filter((x) => x !== "");
  if (splits.length === 0) throw new TunaError("CONFIG_INVALID", `--splits ${String(splitsValue)}: give at least one split name.`);
  const c = { ...resolved.config, splits };
  const backend = createBackend(c.device, (m) => {
    output.err(m);
  });
  const results = await evaluateDataset(backend, c, {
    ...(adapter === undefined ? {} : { adapter }),
    ...(metric === undefined ? {} : { metric }),
    maxNewTokens,
    onNotice: (m) => {
      output.err(m);
    },
  });
  if (values.get("json") === true) {
    output.out(JSON.stringify({ model, adapter: adapter ?? null, dataset: c.dataset_name, splits: results }, null, 2));
    return 0;
  }
  for (const r of results) {
    const metric = r.metric === undefined ? "" : `  ${r.metric.name} ${(100 * r.metric.value).toFixed(1)}% (${r.metric.examples} examples)`;
    output.out(`${r.split}: eval_loss ${r.loss.toFixed(6)}  perplexity ${r.perplexity.toFixed(4)}  (${r.tokens} trained tokens in ${r.examples} rows)${metric}`);
  }
  return 0;
}

export async function evalCommand(args: string[], output: CliOutput): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    output.out(HELP);
    return 0;
  }
  // A dataset tuna train would read (not a pre-tokenized JSONL file) goes through the training data stage.
  // The model is the first argument, as the usage line puts it (flags of tuna train follow).
  const modelArg = args[0] !== undefined && !args[0].startsWith("-") ? args[0] : undefined;
  const datasetAt = args.findIndex((a) => a === "--dataset_name" || a.startsWith("--dataset_name="));
  const dataset = datasetAt < 0 ? undefined : args[datasetAt]!.includes("=") ? args[datasetAt]!.split("=").slice(1).join("=") : args[datasetAt + 1];
  if (dataset !== undefined && !(await isPretokenized(dataset))) {
    if (modelArg === undefined) throw new TunaError("CONFIG_INVALID", `${dataset} is a dataset to prepare as tuna train does; put the model first: tuna eval <model> --dataset_name ${dataset} [flags].`);
    return evalDataset(modelArg, args.slice(1), output);
  }
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
  const model = createCausalLm(backend, opened.params, { checkpointing: false, seed: 0 });
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
