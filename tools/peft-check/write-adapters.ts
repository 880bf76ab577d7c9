// Writes tiny random models, each with an adapter written by tuna's own writer (DoRA on llama, LoRA on Phi-3's
// fused modules, LoRA on Gemma 2, rsLoRA with a rank pattern on Qwen3), into OUT (default /tmp/peftcheck), for
// tuna-logits.ts and check_peft_load.py to compare tuna's and PEFT's logits case by case:
//   npx tsx tools/peft-check/write-adapters.ts && for c in llama_dora phi3_fused gemma2 qwen3_rslora; do
//     npx tsx tools/peft-check/tuna-logits.ts /tmp/peftcheck/$c/model /tmp/peftcheck/$c/adapter /tmp/peftcheck/$c.json &&
//     python3 tools/peft-check/check_peft_load.py /tmp/peftcheck/$c/model /tmp/peftcheck/$c/adapter /tmp/peftcheck/$c.json; done
import { join } from "node:path";
import { writeRandomModel } from "../../src/hf/random-init.ts";
import { parseModelConfig } from "../../src/hf/config.ts";
import { makeLoraSettings, type LoraOptions } from "../../src/lora/settings.ts";
import { allocateLoraParams } from "../../src/lora/init.ts";
import { loraLayout } from "../../src/lora/layout.ts";
import { writeAdapter } from "../../src/lora/adapter-files.ts";
import { createRng } from "../../src/util/random.ts";
const BASE = { pad_token_id: 0, bos_token_id: 1, eos_token_id: 2, vocab_size: 96, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, rms_norm_eps: 1e-5, initializer_range: 0.2 };
const cases: [string, Record<string, unknown>, Omit<LoraOptions, "r" | "alpha">][] = [
  ["llama_dora", { ...BASE, model_type: "llama", tie_word_embeddings: false }, { targetModules: "all-linear", useDora: true }],
  ["phi3_fused", { ...BASE, model_type: "phi3", tie_word_embeddings: false }, { targetModules: "all-linear" }],
  ["gemma2", { ...BASE, model_type: "gemma2", head_dim: 8, query_pre_attn_scalar: 8, sliding_window: 3 }, { targetModules: "all-linear" }],
  ["qwen3_rslora", { ...BASE, model_type: "qwen3", head_dim: 8 }, { targetModules: ["q_proj", "v_proj", "down_proj"], useRslora: true, rankPattern: { v_proj: 6 } }],
];
const OUT = process.env["OUT"] ?? "/tmp/peftcheck";
for (const [name, config, lora] of cases) {
  const dir = join(OUT, name);
  await writeRandomModel(join(dir, "model"), config, { seed: 3, dtype: "F32" });
  const cfg = parseModelConfig(config, name);
  const settings = makeLoraSettings({ r: 4, alpha: 8, ...lora }, cfg);
  const params = allocateLoraParams(loraLayout(settings, cfg));
  const rng = createRng(5);
  for (let i = 0; i < params.flat.length; i++) params.flat[i] = 0.3 * rng.normal();
  for (const t of params.byModule.values()) if (t.magnitude !== null) for (let i = 0; i < t.magnitude.length; i++) t.magnitude[i] = 1 + 0.5 * rng.uniform();
  await writeAdapter(join(dir, "adapter"), { settings, params, embeddings: null });
}
console.log(`wrote ${cases.map(([name]) => name).join(", ")} under ${OUT}`);
