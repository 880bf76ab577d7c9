// `tuna serve` throughput: N concurrent streaming completions of P prompt tokens (random ids) and exactly O
// output tokens (ignore_eos), against an in-process server on 127.0.0.1; prints output tokens/s, time to first
// token (median, p90) and the batches the batcher ran, as JSON and a markdown row. A random-weight model of a
// preset's shape is written first when --preset is given (issue 17's 7B run: --preset llama-2-7b on the GPU).
//   npx tsx tools/bench/serve-throughput.ts --model DIR | --preset NAME [--layers L --hidden H] [--adapters 2]
//     [--requests 64 --prompt_tokens 512 --output_tokens 256]
//     [--max_batch 64] [--device cuda --bf16]
import { parseArgs } from "node:util";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServe } from "../../src/cli/commands/serve.ts";
import { writeRandomModel } from "../../src/hf/random-init.ts";
import { MODEL_PRESETS } from "../../src/hf/presets.ts";
import { parseModelConfig } from "../../src/hf/config.ts";
import { writeAdapter } from "../../src/lora/adapter-files.ts";
import { allocateLoraParams } from "../../src/lora/init.ts";
import { loraLayout } from "../../src/lora/layout.ts";
import { makeLoraSettings } from "../../src/lora/settings.ts";
import { writeLlama2Tokenizer } from "../../src/hf/tokenizer-fixture.ts";
import { createRng } from "../../src/util/random.ts";
import { readFile } from "node:fs/promises";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    preset: { type: "string" },
    layers: { type: "string" },
    hidden: { type: "string" },
    adapters: { type: "string", default: "0" },
    requests: { type: "string", default: "16" },
    prompt_tokens: { type: "string", default: "64" },
    output_tokens: { type: "string", default: "32" },
    max_batch: { type: "string", default: "16" },
    device: { type: "string", default: "cpu" },
    bf16: { type: "boolean", default: false },
  },
});
const N = Number(values.requests);
const P = Number(values.prompt_tokens);
const O = Number(values.output_tokens);
const work = await mkdtemp(join(tmpdir(), "tuna-serve-bench-"));
try {
  let model = values.model;
  if (model === undefined) {
    const preset = MODEL_PRESETS[values.preset ?? ""];
    if (preset === undefined) throw new Error("give --model DIR or --preset NAME (see src/hf/presets.ts)");
    model = join(work, "model");
    // --hidden H scales the shape down for CPU runs: H wide, 8 heads, an MLP 2.75 H wide.
    const narrow = values.hidden === undefined ? {} : { hidden_size: Number(values.hidden), intermediate_size: Math.round((2.75 * Number(values.hidden)) / 64) * 64, num_attention_heads: 8, num_key_value_heads: 8, head_dim: Number(values.hidden) / 8 };
    const json = { ...preset, ...narrow, ...(values.layers === undefined ? {} : { num_hidden_layers: Number(values.layers) }), initializer_range: 0.02 };
    await writeRandomModel(model, json, { seed: 1, dtype: values.bf16 ? "BF16" : "F32" });
    await writeLlama2Tokenizer(model);
  }
  const cfg = parseModelConfig(JSON.parse(await readFile(join(model, "config.json"), "utf8")), model);
  const adapters: { name: string; dir: string }[] = [];
  for (let i = 0; i < Number(values.adapters); i++) {
    const settings = makeLoraSettings({ r: 16, alpha: 32, targetModules: "all-linear" }, cfg);
    const params = allocateLoraParams(loraLayout(settings, cfg));
    const rng = createRng(10 + i);
    for (let j = 0; j < params.flat.length; j++) params.flat[j] = 0.01 * rng.normal();
    const dir = join(work, `adapter-${i}`);
    await writeAdapter(dir, { settings, params, embeddings: null });
    adapters.push({ name: `adapter-${i}`, dir });
  }
  const server = await startServe({
    model,
    adapters,
    values: { device: values.device, ...(values.bf16 ? { bf16: true } : {}) },
    servedModelName: "base",
    host: "127.0.0.1",
    port: 0,
    maxBatch: Number(values.max_batch),
    maxQueue: N,
    onNotice: () => undefined,
  });
  const names = ["base", ...adapters.map((a) => a.name)];
  const rng = createRng(3);
  const ask = async (i: number): Promise<{ ttft: number; end: number; tokens: number }> => {
    const prompt = Array.from({ length: P }, () => 3 + Math.floor(rng.uniform() * (cfg.vocabSize - 3)));
    const start = performance.now();
    const res = await fetch(`${server.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: names[i % names.length], prompt, max_tokens: O, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } }),
    });
    if (!res.ok || res.body === null) throw new Error(`request ${i}: HTTP ${res.status} ${await res.text()}`);
    let ttft = -1;
    let tokens = 0;
    const decoder = new TextDecoder();
    let buffered = "";
    for await (const chunk of res.body) {
      buffered += decoder.decode(chunk as Uint8Array, { stream: true });
      if (ttft < 0) ttft = performance.now() - start;
      const events = buffered.split("\n\n");
      buffered = events.pop() ?? "";
      for (const e of events) {
        const data = e.replace(/^data: /, "");
        if (data === "[DONE]") continue;
        const parsed = JSON.parse(data) as { usage?: { completion_tokens: number } };
        if (parsed.usage !== undefined) tokens = parsed.usage.completion_tokens;
      }
    }
    return { ttft, end: performance.now() - start, tokens };
  };
  const t0 = performance.now();
  const results = await Promise.all(Array.from({ length: N }, (_, i) => ask(i)));
  const wall = (performance.now() - t0) / 1000;
  await server.close();
  const outputTokens = results.reduce((n, r) => n + r.tokens, 0);
  const ttfts = results.map((r) => r.ttft).sort((a, b) => a - b);
  const stats = server.server.batcher.stats;
  const out = {
    model: values.preset ?? model,
    layers: cfg.numLayers,
    device: values.device,
    dtype: values.bf16 ? "bf16" : "f32",
    requests: N,
    adapters: adapters.length,
    promptTokens: P,
    outputTokensEach: O,
    maxBatch: Number(values.max_batch),
    wallSeconds: Number(wall.toFixed(2)),
    outputTokensPerSecond: Number((outputTokens / wall).toFixed(1)),
    ttftMedianMs: Math.round(ttfts[Math.floor(N / 2)]!),
    ttftP90Ms: Math.round(ttfts[Math.floor(0.9 * (N - 1))]!),
    steps: stats.steps,
    meanRowsPerStep: Number((stats.rows / Math.max(1, stats.steps)).toFixed(1)),
    largestBatch: stats.largestBatch,
  };
  console.log(JSON.stringify(out));
  console.log(
    `| ${out.model} (${out.layers} layers, ${out.dtype}) | ${out.device} | ${N} x ${P}+${O}, ${out.adapters} adapter(s) | max_batch ${out.maxBatch} | ${out.outputTokensPerSecond} tok/s | TTFT median ${out.ttftMedianMs} ms, p90 ${out.ttftP90Ms} ms | ${out.meanRowsPerStep} rows/step |`,
  );
} finally {
  await rm(work, { recursive: true, force: true });
}
