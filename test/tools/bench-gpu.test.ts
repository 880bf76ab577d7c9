// The GPU benchmark's core on the CPU backend: a tiny model measured end to end (both modes, both
// checkpointing settings), its breakdown, that it frees what it allocates, and the peer/report helpers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Backend } from "../../src/backend/types.ts";
import { GIB, openBenchDevice, type BenchDevice, type BenchMemory } from "../../tools/bench/gpu/device.ts";
import { benchConfigJson, flopsPerToken } from "../../tools/bench/gpu/models.ts";
import { parsePeerLine, runPeer, type PeerResult } from "../../tools/bench/gpu/peer.ts";
import { HOST } from "../../tools/bench/gpu/profile.ts";
import { compare, markdownTable, targetLines } from "../../tools/bench/gpu/report.ts";
import { randomBatch, runBenchGroup, type BenchResult, type GroupOptions } from "../../tools/bench/gpu/run.ts";
import { createSyntheticPools } from "../../tools/bench/gpu/synthetic-weights.ts";
import { parseModelConfig } from "../../src/hf/config.ts";

const pools = createSyntheticPools(1 << 20, 3);
const VOCAB = 1000;

const BYTES = { f32: 4, bf16: 2, f16: 2, i32: 4, u8: 1 } as const;

/**
 * A CPU bench device whose backend records which allocated tensors are still live, and which reports
 * allocator-like statistics from their sizes (reserved = in use), as the CUDA backend does.
 */
function countingDevice(): { device: BenchDevice; live: Map<number, string> } {
  const inner = openBenchDevice("cpu", 1);
  const live = new Map<number, string>();
  const sizes = new Map<number, number>();
  let inUse = 0;
  let peak = 0;
  const backend: Backend = {
    ...inner.backend,
    alloc: (dtype, shape, name) => {
      const t = inner.backend.alloc(dtype, shape, name);
      live.set(t.id, t.name);
      sizes.set(t.id, t.size * BYTES[dtype]);
      inUse += t.size * BYTES[dtype];
      peak = Math.max(peak, inUse);
      return t;
    },
    free: (t) => {
      live.delete(t.id);
      inUse -= sizes.get(t.id) ?? 0;
      sizes.delete(t.id);
      inner.backend.free(t);
    },
  };
  const memory = (): BenchMemory => ({ inUseBytes: inUse, peakInUseBytes: peak, reservedBytes: inUse, peakReservedBytes: peak, totalBytes: 2 ** 40 });
  const resetPeak = (): void => {
    peak = inUse;
  };
  return { device: { ...inner, backend, memory, resetPeak }, live };
}

function options(mode: "qlora" | "lora"): GroupOptions {
  // The tiny shape with a small vocabulary keeps the CPU step short.
  const configJson = { ...benchConfigJson("tiny", mode), vocab_size: VOCAB };
  return { model: "tiny", mode, configJson, gcs: [true, false], seq: 24, mbs: 2, warmup: 1, steps: 2, profile: true, seed: 5 };
}

for (const mode of ["qlora", "lora"] as const) {
  void test(`tiny ${mode}: sane step times, loss, breakdown, and everything freed`, async () => {
    const { device, live } = countingDevice();
    const lines: string[] = [];
    const results = await runBenchGroup(device, pools, options(mode), (line) => lines.push(line));
    assert.deepEqual([...live.values()], [], "tensors left allocated");
    assert.equal(results.length, 2);
    assert.deepEqual(
      results.map((r) => r.gc),
      [true, false],
    );
    for (const r of results) {
      assert.equal(r.error, undefined, r.error);
      assert.equal(r.mode, mode);
      assert.equal(r.stepMs.length, 2);
      assert.ok(r.stepMs.every((ms) => ms > 0));
      assert.ok(r.tokensPerSecond > 0);
      // tokens/s = seq * mbs / median step (the later of the two sorted values, as the peer takes).
      assert.equal(r.medianStepMs, Math.max(...r.stepMs));
      assert.ok(Math.abs(r.tokensPerSecond - (24 * 2) / (r.medianStepMs / 1000)) < 1e-9);
      // Random weights of std 0.02 over C=64 give logits of std ~0.16: the loss is ln V plus ~0.013.
      assert.ok(Math.abs(r.loss - Math.log(VOCAB)) < 0.1, `loss ${r.loss}`);
      // LoRA r=16 on 7 projections x 2 layers of tiny-llama (C=64, F=176, KV=2 x D=16).
      const perLayer = 16 * (64 + 64) * 2 + 16 * (64 + 32) * 2 + 16 * (64 + 176) * 3;
      assert.equal(r.trainableParams, 2 * perLayer);
      // After loading: the tied bf16 embedding, 5 bf16 norms, the base linears, f32 LoRA parameters and gradients.
      const linearValues = 2 * (64 * 64 * 2 + 32 * 64 * 2 + 176 * 64 * 3);
      const blocks = 2 * (64 * 64 / 64 * 2 + 32 * 64 / 64 * 2 + 176 * 64 / 64 * 3);
      // NF4: packed bytes, an f32 absmax per block of 64, a 16-entry f32 code table per linear.
      const linearBytes = mode === "qlora" ? linearValues / 2 + 4 * blocks + 14 * 16 * 4 : 2 * linearValues;
      const loadBytes = VOCAB * 64 * 2 + 5 * 64 * 2 + linearBytes + 2 * 4 * r.trainableParams;
      assert.ok(r.memory !== null);
      assert.equal(r.memory.afterLoadInUse, loadBytes / GIB);
      assert.ok(r.memory.peakInUse > r.memory.afterLoadInUse, "activations and optimizer moments come on top");
      assert.equal(r.memory.peakReserved, r.memory.peakInUse);
      const b = r.breakdown;
      assert.ok(b !== null);
      const shares = b.categories.reduce((s, c) => s + c.share, 0);
      assert.ok(Math.abs(shares - 1) < 1e-9, `shares sum to ${shares}`);
      assert.ok(b.categories.every((c) => c.share >= 0 && c.ms >= 0));
      assert.equal(b.categories.at(-1)?.name, HOST);
      const ops = (name: string): number => b.categories.find((c) => c.name === name)?.ops ?? -1;
      // 14 quantized linears, dequantized for the forward, the recompute (gc) and the backward's dX.
      assert.equal(ops("dequantize4bit"), mode === "qlora" ? 14 * (r.gc ? 3 : 2) : 0);
      assert.equal(ops("attention fwd"), r.gc ? 4 : 2);
      assert.equal(ops("attention bwd"), 2);
      assert.equal(ops("cross-entropy"), 2);
      assert.ok(ops("matmul") > 0);
      assert.ok(b.phases.forwardMs > 0 && b.phases.backwardMs > 0 && b.phases.optimizerMs >= 0);
    }
    assert.ok(lines.some((l) => l.startsWith(`loaded tiny ${mode}`)));
  });
}

void test("a configuration that cannot load is reported per checkpointing setting, not thrown", async () => {
  const { device } = countingDevice();
  const bad = { ...options("lora"), configJson: { ...benchConfigJson("tiny", "lora"), num_attention_heads: 5 } };
  const results = await runBenchGroup(device, pools, bad, () => undefined);
  assert.equal(results.length, 2);
  for (const r of results) {
    assert.match(r.error ?? "", /hidden_size 64 is not divisible by num_attention_heads 5/);
    assert.ok(Number.isNaN(r.tokensPerSecond));
  }
});

void test("randomBatch: mbs rows of seq tokens, every label trained, no target across rows", () => {
  const b = randomBatch(VOCAB, 10, 3, 0);
  assert.equal(b.ids.length, 30);
  assert.deepEqual([...b.cuSeqlens], [0, 10, 20, 30]);
  for (let i = 0; i < 30; i++) {
    assert.ok(b.ids[i]! >= 0 && b.ids[i]! < VOCAB);
    assert.equal(b.targets[i], i % 10 === 9 ? -100 : b.ids[i + 1]);
    assert.equal(b.positions[i], i % 10);
  }
});

void test("flopsPerToken follows hf_baseline.py: llama2-7b at 2048 with checkpointing is about 41.8 GFLOP", () => {
  const cfg = parseModelConfig(benchConfigJson("llama2-7b", "lora"), "llama2-7b");
  assert.equal(cfg.vocabSize, 32000);
  assert.equal(cfg.numKvHeads, 32);
  const gc = flopsPerToken(cfg, 2048, true);
  assert.ok(Math.abs(gc / 1e9 - 41.8) < 0.1, `${gc / 1e9}`);
  const l3 = parseModelConfig(benchConfigJson("llama3-8b", "qlora"), "llama3-8b");
  assert.equal(l3.numKvHeads, 8);
  assert.equal(l3.ropeTheta, 500000);
  assert.equal(l3.quantization?.loadIn4bit, true);
});

void test("peer lines parse into results and errors; other lines are ignored", () => {
  const ok = parsePeerLine(
    '{"model": "llama2-7b", "seq": 2048, "mbs": 1, "gc": true, "attn": "sdpa", "r": 16, "trainable": 39976960, "step_s": 0.3069, "tok_s": 6673.0, "peak_gib": 14.45, "tflops": 279.0, "loss": 10.43}',
  );
  assert.deepEqual(ok, { model: "llama2-7b", seq: 2048, mbs: 1, gc: true, tok_s: 6673, step_s: 0.3069, peak_gib: 14.45, tflops: 279, loss: 10.43 });
  const err = parsePeerLine('{"plan": {"name": "llama2-7b", "seq": 2048, "mbs": 8, "gc": false}, "error": "OutOfMemoryError()"}');
  assert.ok(err !== null && "error" in err);
  assert.equal(err.error, "OutOfMemoryError()");
  assert.equal(parsePeerLine("Loading checkpoint shards: 100%"), null);
  assert.equal(parsePeerLine("[1, 2]"), null);
});

const hasPython = spawnSync("python3", ["--version"]).status === 0;

void test("runPeer passes the plan as JSON and collects results, errors and a failed exit", { skip: !hasPython && process.env.CI === undefined && "no python3" }, async () => {
  assert.ok(hasPython, "python3 is not on PATH (CI is set, so this test must run)");
  const dir = await mkdtemp(join(tmpdir(), "tuna-bench-peer-"));
  try {
    const script = join(dir, "fake_baseline.py");
    // Echoes each plan entry back as a result (tok_s = seq * mbs) except gc=false, which it reports as failed.
    await writeFile(
      script,
      [
        "import json, sys",
        "print('warming up', flush=True)",
        "for p in json.loads(sys.argv[1]):",
        "    if p['gc']: print(json.dumps(dict(model=p['name'], seq=p['seq'], mbs=p['mbs'], gc=True, step_s=1.0, tok_s=float(p['seq'] * p['mbs']), peak_gib=1.5, tflops=2.0, loss=10.0)))",
        "    else: print(json.dumps(dict(plan=p, error='OutOfMemoryError()')))",
        "sys.exit(3)",
      ].join("\n"),
    );
    const plan = [
      { name: "llama2-7b", seq: 128, mbs: 2, gc: true, steps: 8, warm: 3 },
      { name: "llama2-7b", seq: 128, mbs: 2, gc: false, steps: 8, warm: 3 },
    ];
    const lines: string[] = [];
    const run = await runPeer(script, plan, (l) => lines.push(l));
    assert.equal(run.skipped, null);
    assert.deepEqual(run.results, [{ model: "llama2-7b", seq: 128, mbs: 2, gc: true, tok_s: 256, step_s: 1, peak_gib: 1.5, tflops: 2, loss: 10 }]);
    assert.equal(run.errors.length, 2);
    assert.deepEqual(run.errors[0], { plan: plan[1], error: "OutOfMemoryError()" });
    assert.match(run.errors[1]!.error, /exited with 3/);
    assert.equal(lines[0], "peer: warming up");
    const missing = await runPeer(join(dir, "absent.py"), plan, () => undefined);
    assert.match(missing.skipped ?? "", /absent\.py does not exist/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

void test("comparison, markdown table and targets", () => {
  const base: BenchResult = {
    model: "llama2-7b",
    mode: "qlora",
    gc: true,
    seq: 2048,
    mbs: 1,
    device: "test",
    warmup: 3,
    steps: 8,
    trainableParams: 1,
    loadSeconds: 1,
    worldSize: 1,
    commShare: null,
    stepMs: [250],
    medianStepMs: 250,
    tokensPerSecond: 8192,
    tflops: 340,
    loss: 10.4,
    memory: { peakInUse: 6, peakReserved: 7.5, afterLoadInUse: 4 },
    breakdown: null,
  };
  const peer: PeerResult[] = [{ model: "llama2-7b", seq: 2048, mbs: 1, gc: true, tok_s: 6400, step_s: 0.32, peak_gib: 14.4, tflops: 279, loss: 10.4 }];
  const rows = compare([base, { ...base, mode: "lora", gc: false }], peer);
  assert.equal(rows[0]!.speedRatio, 8192 / 6400);
  assert.equal(rows[0]!.memoryRatio, 6 / 14.4);
  assert.ok(Number.isNaN(rows[1]!.speedRatio), "no peer result for gc off");
  const table = markdownTable(rows);
  assert.equal(table.length, 4);
  assert.match(table[2]!, /^\| llama2-7b \| qlora \| on \| 2048 \| 1 \| 8,192 \| 6,400 \| 1\.28 \| 6\.00 \/ 7\.50 \| 14\.40 \| 0\.42 \|/);
  const targets = targetLines(rows);
  assert.match(targets[0]!, /target 1 .*: MET$/);
  assert.match(targets[1]!, /target 2 .*peak reserved 7\.50 GiB .*: MET$/);
  const slow = targetLines(compare([{ ...base, tokensPerSecond: 6000, memory: { peakInUse: 9, peakReserved: 9.5, afterLoadInUse: 4 } }], peer));
  assert.match(slow[0]!, /NOT MET$/);
  assert.match(slow[1]!, /NOT MET$/);
});

void test("--nproc 2 on the CPU: two ranks all-reduce gradients each step; tokens/s per rank, scaling against the 1-rank run of the same call, and the all-reduce's share are reported", { timeout: 180_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), "tuna-bench-nproc-"));
  try {
    const json = join(dir, "bench.json");
    const r = spawnSync(
      process.execPath,
      ["--import", "tsx", "tools/bench/gpu.ts", "--device", "cpu", "--models", "tiny", "--modes", "lora", "--gc", "on", "--seq", "32", "--steps", "2", "--warmup", "1", "--nproc", "2", "--peer", "none", "--profile", "off", "--threads", "1", "--json", json],
      { cwd: new URL("../..", import.meta.url).pathname, encoding: "utf8", timeout: 170_000 },
    );
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /tiny lora gc on seq 32 mbs 1 on 2 ranks: \d+ tokens\/s in all, \d+ per rank; scaling efficiency [\d.]+% of 1 rank \(\d+ tokens\/s\); gradient all-reduce [\d.]+% of the step/);
    const { readFile } = await import("node:fs/promises");
    const out = JSON.parse(await readFile(json, "utf8")) as { results: BenchResult[]; parallelResults: BenchResult[] };
    assert.equal(out.results.length, 1);
    assert.equal(out.parallelResults.length, 1);
    const p = out.parallelResults[0]!;
    assert.equal(p.worldSize, 2);
    assert.ok(p.commShare !== null && p.commShare > 0 && p.commShare < 1, String(p.commShare));
    assert.ok(Number.isFinite(p.loss) && p.loss > 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
