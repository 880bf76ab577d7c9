// CPU backend benchmark: matmul GFLOP/s at the shapes a tiny model hits, and LoRA training-step
// throughput (forward + backward) of examples/tiny-llama. `npx tsx tools/bench/cpu.ts [--threads N]`
import { parseArgs } from "node:util";
import { performance } from "node:perf_hooks";
import { createCpuBackend } from "../../src/backend/cpu/index.ts";
import { openModelFolder } from "../../src/hf/folder.ts";
import { loadCausalLmParams } from "../../src/model/causal-lm/load.ts";
import { createCausalLm, forward, backward, uploadBatch } from "../../src/model/causal-lm/model.ts";
import { batchFromDocuments } from "../../src/data/batch.ts";
import { makeLoraSettings } from "../../src/lora/settings.ts";
import { initLoraWeights } from "../../src/lora/init.ts";
import { createRng } from "../../src/util/random.ts";

const { values } = parseArgs({ options: { threads: { type: "string", default: "2" }, tokens: { type: "string", default: "512" } } });
const threads = Number(values.threads);
const be = createCpuBackend({ threads });
const rng = createRng(0);

function rand(shape: number[]) {
  const t = be.alloc("f32", shape);
  const v = new Float32Array(t.size);
  for (let i = 0; i < v.length; i++) v[i] = rng.normal();
  be.upload(t, v);
  return t;
}

console.log(`threads ${threads}`);
for (const [M, N, K, transB, label] of [
  [512, 32000, 64, true, "lm_head forward x@W^T"],
  [512, 64, 32000, false, "lm_head dX dlogits@W"],
  [512, 176, 64, true, "gate_proj forward"],
  [512, 64, 176, true, "down_proj forward"],
] as const) {
  const a = rand([M, K]);
  const b = transB ? rand([N, K]) : rand([K, N]);
  const out = be.alloc("f32", [M, N]);
  be.matmul(out, a, b, { transB }); // warm-up
  const reps = 5;
  const t0 = performance.now();
  for (let r = 0; r < reps; r++) be.matmul(out, a, b, { transB });
  const ms = (performance.now() - t0) / reps;
  console.log(`matmul ${label.padEnd(24)} ${M}x${N}x${K}: ${ms.toFixed(1)} ms, ${((2 * M * N * K) / ms / 1e6).toFixed(2)} GFLOP/s`);
}

const folder = await openModelFolder("examples/tiny-llama");
const cfg = folder.config;
const lora = makeLoraSettings({ r: 8, alpha: 16, dropout: 0.1, targetModules: "all-linear" }, cfg);
const params = await loadCausalLmParams(be, cfg, folder.weights, { mode: "lora", baseDtype: "f32", lora });
await folder.weights.close();
be.upload(params.trainable.params, initLoraWeights(lora, cfg, rng).flat);
const model = createCausalLm(be, params, { checkpointing: false, seed: 0 });
const T = Number(values.tokens);
const ids = Array.from({ length: T }, () => 3 + Math.floor(rng.uniform() * 31000));
const batch = uploadBatch(model, batchFromDocuments([{ inputIds: ids }]));
await forward(model, batch);
await backward(model, batch, 1 / T);
const steps = 5;
const t0 = performance.now();
for (let s = 0; s < steps; s++) {
  const r = await forward(model, batch);
  await backward(model, batch, 1 / r.tokens);
}
const stepMs = (performance.now() - t0) / steps;
console.log(`tiny-llama LoRA r=8 all-linear, ${T} tokens/step: ${stepMs.toFixed(0)} ms/step, ${((T / stepMs) * 1000).toFixed(0)} tokens/s (forward+backward)`);
