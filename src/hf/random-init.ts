// Writes a random-initialized model in Hugging Face layout (config.json, generation_config.json,
// safetensors): the tiny test models and the random-weight benchmark shapes come from here.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createRng, type Rng } from "../util/random.ts";
import { f32ToBf16Bits } from "../util/half.ts";
import { writeShardedSafetensors } from "../io/safetensors/checkpoint.ts";
import type { TensorToWrite } from "../io/safetensors/writer.ts";
import { parseModelConfig } from "./config.ts";
import { expectedWeights, type ExpectedWeight } from "./weights.ts";
import type { HfConfigJson } from "./presets.ts";
import { numel } from "../util/shape.ts";

export interface RandomModelOptions {
  seed: number;
  dtype: "F32" | "BF16";
  /** Std of the normal init of linear and embedding weights (HF's initializer_range). */
  std?: number;
  /**
   * HF initializes norms to 1 and biases to 0. Tests want every weight to matter, so by default norms
   * are 1 + small noise and biases random; `hfInit: true` gives the exact HF initial values.
   */
  hfInit?: boolean;
  maxShardBytes?: number;
}

const NORM_KINDS = new Set<string>(["input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm", "norm", "q_norm", "k_norm"]);

/** `unit` is the stored value of a norm weight that scales by 1: 1, or 0 where the weight is applied as 1 + w (Gemma). */
function fill(w: ExpectedWeight, rng: Rng, std: number, hfInit: boolean, unit: number): Float32Array {
  const values = new Float32Array(numel(w.shape));
  const isNorm = NORM_KINDS.has(w.kind);
  for (let i = 0; i < values.length; i++) {
    if (isNorm) values[i] = hfInit ? unit : unit + 0.1 * rng.normal();
    else if (w.isBias) values[i] = hfInit ? 0 : std * rng.normal();
    else values[i] = std * rng.normal();
  }
  return values;
}

function toBytes(values: Float32Array, dtype: "F32" | "BF16"): Uint8Array {
  if (dtype === "F32") return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const bits = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) bits[i] = f32ToBf16Bits(values[i]!);
  return new Uint8Array(bits.buffer);
}

/** Writes the model folder; returns the files written. The config is validated first. */
export async function writeRandomModel(dir: string, config: HfConfigJson, options: RandomModelOptions): Promise<string[]> {
  const cfg = parseModelConfig(config, "random model config");
  const rng = createRng(options.seed);
  const std = options.std ?? (typeof config["initializer_range"] === "number" ? config["initializer_range"] : 0.02);
  const hfInit = options.hfInit ?? false;
  const tensors: TensorToWrite[] = expectedWeights(cfg).map((w) => ({
    name: w.name,
    dtype: options.dtype,
    shape: w.shape,
    data: toBytes(fill(w, rng, std, hfInit, cfg.normPlusOne ? 0 : 1), options.dtype),
  }));
  await mkdir(dir, { recursive: true });
  const torchDtype = options.dtype === "F32" ? "float32" : "bfloat16";
  await writeFile(join(dir, "config.json"), jsonSorted({ ...config, torch_dtype: torchDtype }));
  const generation: HfConfigJson = { _from_model_config: true };
  if (cfg.bosTokenId !== undefined) generation["bos_token_id"] = cfg.bosTokenId;
  if (cfg.eosTokenIds.length > 0) generation["eos_token_id"] = cfg.eosTokenIds.length === 1 ? cfg.eosTokenIds[0] : cfg.eosTokenIds;
  await writeFile(join(dir, "generation_config.json"), jsonSorted(generation));
  const files = await writeShardedSafetensors(dir, tensors, options.maxShardBytes === undefined ? {} : { maxShardBytes: options.maxShardBytes });
  return [join(dir, "config.json"), join(dir, "generation_config.json"), ...files];
}

/** JSON as transformers writes configs: indent 2, keys sorted, trailing newline. */
function jsonSorted(value: HfConfigJson): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v !== null && typeof v === "object") {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sort((v as Record<string, unknown>)[k])]));
    }
    return v;
  };
  return JSON.stringify(sort(value), null, 2) + "\n";
}
