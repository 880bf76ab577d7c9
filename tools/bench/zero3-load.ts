// Peak host memory of one rank loading a pre-quantized NF4 (bitsandbytes, double quant) Llama-2 7B or 70B shape
// from synthetic weights, with ZeRO-3's load-time sharding over `--world` ranks (this process plays `--rank`),
// or whole with --world 1. One process per measurement, so the peak is this load's alone:
//   npx tsx tools/bench/zero3-load.ts --model 7b --world 2
import { parseArgs } from "node:util";
import { createCpuBackend } from "../../src/backend/cpu/index.ts";
import { parseModelConfig } from "../../src/hf/config.ts";
import { MODEL_PRESETS } from "../../src/hf/presets.ts";
import { makeLoraSettings } from "../../src/lora/settings.ts";
import { loadCausalLmParams } from "../../src/model/causal-lm/load.ts";
import { createLayerSharder } from "../../src/train/sharded-layers.ts";
import { bnbNf4QuantizationConfig } from "./gpu/models.ts";
import { createSyntheticPools, createSyntheticWeights } from "./gpu/synthetic-weights.ts";

const SHAPES = {
  "7b": { vocab_size: 32000, hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32 },
  "70b": { vocab_size: 32000, hidden_size: 8192, intermediate_size: 28672, num_hidden_layers: 80, num_attention_heads: 64, num_key_value_heads: 8 },
} as const;

const { values } = parseArgs({ options: { model: { type: "string", default: "7b" }, world: { type: "string", default: "1" }, rank: { type: "string", default: "0" } } });
if (values.model !== "7b" && values.model !== "70b") throw new Error(`--model ${values.model}: 7b or 70b`);
const shape = SHAPES[values.model];
const world = Number(values.world);
const rank = Number(values.rank);
const json = { ...MODEL_PRESETS["llama-2-7b"], ...shape, quantization_config: bnbNf4QuantizationConfig() };
const cfg = parseModelConfig(json, `synthetic ${values.model}`);
const be = createCpuBackend();
const t0 = performance.now();
const source = createSyntheticWeights(cfg, createSyntheticPools(64 * 2 ** 20, 0), `synthetic ${values.model}`);
// This process plays one rank: the all-gather (used by double quantization at load) is stood in by its own share repeated.
const sharder = world > 1 ? createLayerSharder(be, { index: rank, size: world, allGather: (x) => Promise.resolve(repeat(x, world)) }) : undefined;
const lora = makeLoraSettings({ r: 16, alpha: 32, dropout: 0, targetModules: "all-linear" }, cfg);
await loadCausalLmParams(be, cfg, source, {
  mode: "lora",
  lora,
  baseDtype: "bf16",
  quantize: null,
  ...(sharder === undefined ? {} : { shard: sharder.load }),
});
function repeat(x: Float32Array, times: number): Float32Array {
  const out = new Float32Array(x.length * times);
  for (let r = 0; r < times; r++) out.set(x, r * x.length);
  return out;
}
const seconds = (performance.now() - t0) / 1000;
const peakGiB = (process.resourceUsage().maxRSS * 1024) / 2 ** 30;
console.log(JSON.stringify({ model: values.model, world, rank, peakHostGiB: Number(peakGiB.toFixed(2)), seconds: Number(seconds.toFixed(1)) }));
