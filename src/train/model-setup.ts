// Loads the model for training as the configuration says: vocabulary resized for added chat tokens
// (new rows = mean of the old ones, and trainable), 4-bit/8-bit base, LoRA initialized as PEFT does
// (or every weight trainable), everything on the backend with the trainable buffer filled.
import type { Backend } from "../backend/types.ts";
import type { TrainConfig } from "../config/index.ts";
import type { WeightSource } from "../io/safetensors/checkpoint.ts";
import { decodeToFloat32 } from "../io/safetensors/convert.ts";
import type { SavedEmbeddings } from "../lora/adapter-files.ts";
import { copyTokenRows, initLoraWeights } from "../lora/init.ts";
import { countAllParameters, formatTrainableParameters, loraLayout } from "../lora/layout.ts";
import { makeLoraSettings, type LoraSettings } from "../lora/settings.ts";
import type { ModelConfig } from "../hf/config.ts";
import { countParameters } from "../hf/weights.ts";
import { loadCausalLmParams, type LoadOptions } from "../model/causal-lm/load.ts";
import type { CausalLmParams } from "../model/causal-lm/params.ts";
import { createRng } from "../util/random.ts";

export interface TrainModel {
  cfg: ModelConfig;
  params: CausalLmParams;
  lora: LoraSettings | null;
  /** Whole embedding matrices when the vocabulary was resized (saved with the adapter, as PEFT does). */
  embeddings: SavedEmbeddings | null;
  trainableLine: string;
}

/** Mean-initialized new rows (transformers' mean_resizing, without its tiny random perturbation). */
function resizeRows(values: Float32Array, rows: number, C: number, newRows: number): Float32Array {
  const out = new Float32Array(newRows * C);
  out.set(values.subarray(0, rows * C));
  const mean = new Float64Array(C);
  for (let r = 0; r < rows; r++) for (let c = 0; c < C; c++) mean[c]! += values[r * C + c]!;
  for (let r = rows; r < newRows; r++) for (let c = 0; c < C; c++) out[r * C + c] = mean[c]! / rows;
  return out;
}

async function readMatrix(source: WeightSource, name: string): Promise<Float32Array> {
  return decodeToFloat32(await source.readTensor(name), source.info(name).dtype);
}

/** The LoRA settings of a run (null: full fine-tuning); new chat tokens get trainable rows. */
export function trainLoraSettings(config: TrainConfig, cfg: ModelConfig, newTokenIds: readonly number[]): LoraSettings | null {
  if (!config.use_peft_lora) return null;
  // New chat tokens get trainable rows (input side; untied models also their lm_head rows).
  const ids = [...newTokenIds];
  const trainableTokenIndices = ids.length === 0 ? null : cfg.tieWordEmbeddings ? ids : { embed_tokens: ids, lm_head: ids };
  return makeLoraSettings(
    {
      r: config.lora_r,
      alpha: config.lora_alpha,
      dropout: config.lora_dropout,
      useRslora: config.use_rslora,
      useDora: config.use_dora,
      targetModules: config.lora_target_modules,
      trainableTokenIndices,
      baseModelNameOrPath: config.model_name_or_path,
    },
    cfg,
    "the LoRA options",
  );
}

/** What the base is quantized to at load. */
export function quantizeOption(config: TrainConfig): LoadOptions["quantize"] {
  return config.use_4bit_quantization
    ? { kind: "4bit", quantType: config.bnb_4bit_quant_type === "fp4" ? "fp4" : "nf4", doubleQuant: config.use_nested_quant }
    : config.use_8bit_quantization
      ? { kind: "8bit" }
      : null;
}

export async function setUpTrainModel(
  backend: Backend,
  baseCfg: ModelConfig,
  source: WeightSource,
  config: TrainConfig,
  tokens: { newTokenIds: number[]; vocabSize: number },
  shard?: LoadOptions["shard"],
): Promise<TrainModel> {
  const C = baseCfg.hiddenSize;
  let cfg = baseCfg;
  let embeddings: SavedEmbeddings | null = null;
  if (tokens.vocabSize > baseCfg.vocabSize) {
    cfg = { ...baseCfg, vocabSize: tokens.vocabSize };
    const embed = resizeRows(await readMatrix(source, "model.embed_tokens.weight"), baseCfg.vocabSize, C, tokens.vocabSize);
    const lmHead = baseCfg.tieWordEmbeddings ? null : resizeRows(await readMatrix(source, "lm_head.weight"), baseCfg.vocabSize, C, tokens.vocabSize);
    embeddings = { vocabSize: tokens.vocabSize, embedTokens: embed, lmHead };
  }
  const lora = trainLoraSettings(config, cfg, tokens.newTokenIds);
  const quantize = quantizeOption(config);
  const params = await loadCausalLmParams(backend, cfg, source, {
    mode: lora === null ? "full" : "lora",
    baseDtype: config.bf16 ? "bf16" : "f32",
    quantize,
    embeddings,
    ...(lora === null ? {} : { lora }),
    ...(shard === undefined ? {} : { shard }),
  });
  let trainableLine: string;
  if (lora !== null) {
    const init = initLoraWeights(lora, cfg, createRng(config.seed));
    if (init.layout.tokens.length > 0) {
      const embed = embeddings?.embedTokens ?? (await readMatrix(source, "model.embed_tokens.weight"));
      const lmHead = cfg.tieWordEmbeddings ? embed : (embeddings?.lmHead ?? (await readMatrix(source, "lm_head.weight")));
      copyTokenRows(init, { embed_tokens: embed, lm_head: lmHead });
    }
    backend.upload(params.trainable.params, init.flat);
    trainableLine = formatTrainableParameters(init.layout.trainableParams, countAllParameters(loraLayout(lora, cfg), cfg));
  } else {
    const total = countParameters(cfg).total;
    trainableLine = formatTrainableParameters(total, total);
  }
  return { cfg, params, lora, embeddings, trainableLine };
}
