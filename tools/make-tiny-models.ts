// Writes tiny random-init models in HF layout (one per supported family, plus a sharded one) with
// Llama-2's tokenizer. `npm run fixtures -- --out DIR [--preset NAME]... [--dtype f32|bf16] [--seed N]`
import { parseArgs } from "node:util";
import { join } from "node:path";
import { MODEL_PRESETS } from "../src/hf/presets.ts";
import { writeRandomModel } from "../src/hf/random-init.ts";
import { writeLlama2Tokenizer, CHATML_TEMPLATE } from "../src/hf/tokenizer-fixture.ts";

const { values } = parseArgs({
  options: {
    out: { type: "string", default: "fixtures/models" },
    preset: { type: "string", multiple: true },
    dtype: { type: "string", default: "bf16" },
    seed: { type: "string", default: "0" },
    "max-shard-bytes": { type: "string" },
  },
});
const presets = values.preset ?? ["tiny-llama", "tiny-llama3", "tiny-mistral", "tiny-qwen2"];
const dtype = values.dtype === "f32" ? "F32" : "BF16";
for (const [i, name] of presets.entries()) {
  const config = MODEL_PRESETS[name];
  if (config === undefined) {
    console.error(`unknown preset ${name}; known: ${Object.keys(MODEL_PRESETS).join(", ")}`);
    process.exit(2);
  }
  const dir = join(values.out, name);
  const maxShard = values["max-shard-bytes"];
  const files = await writeRandomModel(dir, config, {
    seed: Number(values.seed) + i,
    dtype,
    ...(maxShard === undefined ? {} : { maxShardBytes: Number(maxShard) }),
  });
  await writeLlama2Tokenizer(dir, { chatTemplate: CHATML_TEMPLATE });
  console.log(`${name}: ${files.length} files in ${dir}`);
}
