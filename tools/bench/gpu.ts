// GPU training benchmark: tuna's LoRA/QLoRA optimizer step on random-weight Llama shapes against the peer
// (transformers + PEFT, hf_baseline.py) in the same run. `npm run bench -- [--device cpu --models tiny ...]`.
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { errorMessage } from "../../src/util/errors.ts";
import { packageRoot } from "../../src/util/package-root.ts";
import { openBenchDevice, type BenchDevice, type BenchDeviceKind } from "./gpu/device.ts";
import { BENCH_MODEL_NAMES, BENCH_MODES, benchConfigJson, benchModel, type BenchMode } from "./gpu/models.ts";
import { runPeer, type PeerPlanEntry, type PeerRun } from "./gpu/peer.ts";
import { compare, configName, markdownTable, summaryLines, targetLines } from "./gpu/report.ts";
import { runBenchGroup, type BenchResult } from "./gpu/run.ts";
import { createSyntheticPools } from "./gpu/synthetic-weights.ts";
import { dataParallelWorker, runDataParallelGroup, scalingLines } from "./gpu/data-parallel.ts";

const USAGE = `usage: node dist/bench-gpu.mjs [options]   (npm run bench -- [options])
  --device cuda|cpu          backend (default cuda)
  --models LIST              ${BENCH_MODEL_NAMES.join(", ")} (default llama2-7b,llama3-8b)
  --modes LIST               qlora (pre-quantized NF4 + double quant), qlora-quantize (bf16 weights quantized
                             at load), lora (bf16 base) (default qlora,lora)
  --gc LIST                  gradient checkpointing on, off (default on,off; on always runs first)
  --seq N --mbs N            tokens per sequence, sequences per micro-batch (default 2048, 1)
  --steps N --warmup N       measured and warm-up steps (default 8, 3)
  --peer PATH|none           hf_baseline.py (default ../shared/bench/hf_baseline.py beside the repo)
  --json PATH                write every result as JSON
  --profile on|off           time one extra step op by op (default on)
  --seed N --pool-mib N --threads N   random seed, random weight pool size, CPU threads
  --lora-dropout P                    LoRA dropout (default 0, as the peer; the seed workflow uses 0.1)
  --nproc N                  also run each configuration on N ranks (one GPU each; N processes on the CPU) that
                             all-reduce gradients every step, and report tokens/s per rank, scaling efficiency
                             against the 1-rank run of this call, and the all-reduce's share of the step`;

function fail(message: string): never {
  console.error(`${message}\n\n${USAGE}`);
  process.exit(2);
}

function list<T extends string>(value: string, allowed: readonly T[], flag: string): T[] {
  const items = value.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const item of items) if (!(allowed as readonly string[]).includes(item)) fail(`${flag}: "${item}" is not one of ${allowed.join(", ")}`);
  if (items.length === 0) fail(`${flag} is empty`);
  return items as T[];
}

function positiveInt(value: string, flag: string, min = 1): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min) fail(`${flag} must be an integer >= ${min}, got "${value}"`);
  return n;
}

const { values } = parseArgs({
  options: {
    device: { type: "string", default: "cuda" },
    models: { type: "string", default: "llama2-7b,llama3-8b" },
    modes: { type: "string", default: "qlora,lora" },
    gc: { type: "string", default: "on,off" },
    seq: { type: "string", default: "2048" },
    mbs: { type: "string", default: "1" },
    steps: { type: "string", default: "8" },
    warmup: { type: "string", default: "3" },
    peer: { type: "string" },
    json: { type: "string" },
    profile: { type: "string", default: "on" },
    seed: { type: "string", default: "0" },
    "pool-mib": { type: "string", default: "64" },
    "lora-dropout": { type: "string", default: "0" },
    threads: { type: "string" },
    nproc: { type: "string", default: "1" },
    worker: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}

const deviceKind = list<BenchDeviceKind>(values.device, ["cuda", "cpu"], "--device")[0]!;
const models = list(values.models, BENCH_MODEL_NAMES, "--models");
const modes = list<BenchMode>(values.modes, BENCH_MODES, "--modes");
// Checkpointing on first: a later setting's peak reserved includes blocks the allocator cached for an
// earlier one, and the larger activations of gc off would inflate gc on's figure.
const gcs = [...new Set(list(values.gc, ["on", "off"], "--gc").map((g) => g === "on"))].sort((a, b) => Number(b) - Number(a));
const seq = positiveInt(values.seq, "--seq", 2);
const mbs = positiveInt(values.mbs, "--mbs");
const steps = positiveInt(values.steps, "--steps");
const warmup = positiveInt(values.warmup, "--warmup", 0);
const profile = list(values.profile, ["on", "off"], "--profile")[0] === "on";
const seed = positiveInt(values.seed, "--seed", 0);
const poolMiB = positiveInt(values["pool-mib"], "--pool-mib");
const loraDropout = Number(values["lora-dropout"]);
if (!(loraDropout >= 0 && loraDropout < 1)) fail(`--lora-dropout must be in [0, 1), got ${values["lora-dropout"]}`);
const threads = values.threads === undefined ? undefined : positiveInt(values.threads, "--threads");
const nproc = positiveInt(values.nproc, "--nproc");

const root = packageRoot(import.meta.url);
const peerPath = values.peer === "none" ? null : resolve(values.peer ?? join(root, "..", "shared", "bench", "hf_baseline.py"));
const kernels = join(root, "src", "backend", "cuda", "kernels");
console.log(`tuna GPU benchmark: device ${deviceKind}, Node ${process.version}, package root ${root}, peer ${peerPath ?? "none"}`);
if (deviceKind === "cuda" && !existsSync(kernels)) {
  fail(`the CUDA kernel sources are not at ${kernels}: run the bundle from inside the repository tree (dist/ beside src/)`);
}

const t0 = performance.now();
const pools = createSyntheticPools(poolMiB * 2 ** 20, seed);
console.log(`random weight pools: 2 x ${poolMiB} MiB in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

if (values.worker) {
  // A rank of --nproc (started by runDataParallelGroup with one model and mode).
  const model = models[0]!;
  const mode = modes[0]!;
  process.exit(await dataParallelWorker(deviceKind, pools, { model, mode, configJson: benchConfigJson(model, mode), gcs, seq, mbs, warmup, steps, profile: false, seed, loraDropout }, threads));
}

function openDevice(): BenchDevice {
  try {
    return openBenchDevice(deviceKind, threads);
  } catch (e) {
    console.error(`cannot open the ${deviceKind} backend: ${errorMessage(e)}`);
    process.exit(1);
  }
}

const results: BenchResult[] = [];
const parallelResults: BenchResult[] = [];
let deviceName = "";
let peer: PeerRun = { skipped: "--peer none", results: [], errors: [] };
let parallelPeer: PeerRun = { skipped: nproc === 1 ? "--nproc 1" : deviceKind !== "cuda" ? "tuna ran on the CPU; the peer runs on CUDA only" : "--peer none", results: [], errors: [] };

/** Writes --json after every group too, so a run cut short (time limit, crash) still leaves its results. */
async function writeJson(done: boolean): Promise<void> {
  if (values.json === undefined) return;
  const rows = compare(results, peer.results);
  const out = {
    date: new Date().toISOString(),
    complete: done,
    device: deviceName,
    node: process.version,
    argv: process.argv.slice(2),
    results,
    parallelResults,
    peer,
    parallelPeer,
    comparisons: rows.map((c) => ({ config: configName(c.result), speedRatio: c.speedRatio, memoryRatio: c.memoryRatio, peer: c.peer ?? null })),
    targets: targetLines(rows),
  };
  await writeFile(values.json, `${JSON.stringify(out, (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 2)}\n`);
  if (done) console.log(`\nwrote ${values.json}`);
}
for (const model of models) {
  for (const mode of modes) {
    // One backend per (model, mode): its allocator's reserved memory starts from zero for every group.
    const device = openDevice();
    deviceName = device.description;
    console.log(`\n== ${model} ${mode} on ${device.description}: gc ${gcs.map((g) => (g ? "on" : "off")).join(", ")}, seq ${seq}, mbs ${mbs}, lora dropout ${loraDropout}, ${warmup} warm-up + ${steps} steps`);
    try {
      const options = { model, mode, configJson: benchConfigJson(model, mode), gcs, seq, mbs, warmup, steps, profile, seed, loraDropout };
      results.push(
        ...(await runBenchGroup(device, pools, options, (line) => {
          console.log(line);
        })),
      );
    } finally {
      try {
        device.dispose();
      } catch (e) {
        console.log(`releasing the ${deviceKind} backend failed: ${errorMessage(e)}`);
      }
    }
    if (nproc > 1) {
      // The device is released above, so rank 0 can take GPU 0.
      console.log(`\n== ${model} ${mode} on ${nproc} ranks (data parallel, gradients all-reduced every step)`);
      const args = process.argv.slice(2).filter((a, i, all) => !["--models", "--modes"].includes(a) && !["--models", "--modes"].includes(all[i - 1] ?? ""));
      parallelResults.push(
        ...(await runDataParallelGroup(process.argv[1]!, [...args, "--models", model, "--modes", mode], nproc, (line) => {
          console.log(line);
        })),
      );
    }
    await writeJson(false);
  }
}

if (peerPath !== null) {
  const plan: PeerPlanEntry[] = [];
  for (const model of models) {
    const name = benchModel(model).peer;
    if (name === null) continue;
    for (const gc of gcs) plan.push({ name, seq, mbs, gc, steps, warm: warmup });
  }
  if (deviceKind !== "cuda") peer = { skipped: "tuna ran on the CPU; the peer runs on CUDA only", results: [], errors: [] };
  else {
    console.log(`\n== peer: python3 ${peerPath} (${plan.length} configurations)`);
    peer = await runPeer(peerPath, plan, (line) => {
      console.log(line);
    });
  }
}
// The peer on N GPUs: transformers + PEFT under torchrun with DDP (tools/bench/peer_ddp.py), same shapes.
if (nproc > 1 && peerPath !== null && deviceKind === "cuda") {
  const plan: PeerPlanEntry[] = [];
  for (const model of models) {
    const name = benchModel(model).peer;
    if (name !== null) for (const gc of gcs) plan.push({ name, seq, mbs, gc, steps, warm: warmup });
  }
  console.log(`\n== peer on ${nproc} GPUs: torchrun tools/bench/peer_ddp.py (${plan.length} configurations)`);
  parallelPeer = await runPeer(join(root, "tools", "bench", "peer_ddp.py"), plan, (line) => {
    console.log(line);
  }, (planJson) => ["-m", "torch.distributed.run", "--nproc_per_node", String(nproc), join(root, "tools", "bench", "peer_ddp.py"), planJson, peerPath]);
}
if (peer.skipped !== null) console.log(`\npeer skipped: ${peer.skipped}`);
for (const e of peer.errors) console.log(`peer error${e.plan === null ? "" : ` (${JSON.stringify(e.plan)})`}: ${e.error}`);

const rows = compare(results, peer.results);
console.log(`\n== summary (${deviceName}; peer: transformers + PEFT bf16 LoRA, no bitsandbytes there, so QLoRA rows compare against bf16 LoRA)`);
for (const line of [...summaryLines(rows), ...targetLines(rows)]) console.log(line);
if (nproc > 1) {
  console.log(`\n== ${nproc} ranks against 1 (same call)`);
  for (const line of scalingLines(results, parallelResults)) console.log(line);
  if (parallelPeer.skipped !== null) console.log(`peer on ${nproc} GPUs skipped: ${parallelPeer.skipped}`);
  for (const e of parallelPeer.errors) console.log(`peer on ${nproc} GPUs error: ${e.error}`);
  for (const p of parallelResults) {
    const name = benchModel(p.model).peer;
    const other = parallelPeer.results.find((r) => r.model === name && r.gc === p.gc && r.seq === p.seq && r.mbs === p.mbs);
    if (other !== undefined) console.log(`${p.model} ${p.mode} gc ${p.gc ? "on" : "off"} on ${nproc} GPUs: tuna ${Math.round(p.tokensPerSecond)} tokens/s, peer (DDP) ${Math.round(other.tok_s)}, ratio ${(p.tokensPerSecond / other.tok_s).toFixed(2)}`);
  }
  if (parallelResults.length === 0) console.log("no data-parallel result: see the rank errors above");
}
console.log(`\nfor docs/perf-log.md (${new Date().toISOString().slice(0, 10)}, ${deviceName}, ${warmup} warm-up + median of ${steps} steps):\n`);
for (const line of markdownTable(rows)) console.log(line);

await writeJson(true);
if ([...results, ...parallelResults].some((r) => r.error !== undefined) || (nproc > 1 && parallelResults.length === 0)) process.exit(1);
