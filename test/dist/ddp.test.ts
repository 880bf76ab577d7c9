// Data-parallel training through `tuna launch` with real processes on the host transport: 2 and 3 ranks
// reproduce the one-process run with the same global batch (per-device batch x accumulation x ranks),
// with packing and gradient accumulation: the logged losses and gradient norms and the final adapter agree
// within 1e-6 relative (only the order of float sums differs).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openSafetensors } from "../../src/io/safetensors/reader.ts";
import { decodeToFloat32 } from "../../src/io/safetensors/convert.ts";

const root = new URL("../..", import.meta.url).pathname;
let tmp = "";

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), "tuna-ddp-"));
  const build = spawnSync(process.execPath, ["tools/build.mjs"], { cwd: root, encoding: "utf8" });
  assert.equal(build.status, 0, build.stderr);
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const flags = (out: string, ga: number): string[] => [
  "--model_name_or_path", join(root, "examples/tiny-llama"),
  "--dataset_name", join(root, "test/fixtures/chat-small.jsonl"),
  "--splits", "train",
  "--chat_template_format", "chatml", "--assistant_only_loss",
  "--use_peft_lora", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0",
  "--packing", "--max_seq_length", "48",
  "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", String(ga),
  "--learning_rate", "2e-3", "--logging_steps", "1", "--max_steps", "5",
  "--save_strategy", "no", "--report_to", "none", "--seed", "5", "--device", "cpu",
  "--output_dir", out,
];

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  await new Promise((r) => server.close(r));
  return port;
}

interface Run {
  metrics: { step: number; loss: number; grad_norm: number }[];
  adapter: Map<string, Float32Array>;
}

async function readRun(out: string): Promise<Run> {
  const metrics = (await readFile(join(out, "metrics.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as Run["metrics"][number]).filter((m) => "loss" in m);
  const file = await openSafetensors(join(out, "adapter_model.safetensors"));
  const adapter = new Map<string, Float32Array>();
  for (const [name, info] of file.tensors) adapter.set(name, decodeToFloat32(await file.readTensor(name), info.dtype));
  await file.close();
  return { metrics, adapter };
}

function relative(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);
}

for (const [world, ga] of [[2, 1], [3, 2]] as const) {
  void test(`${world} ranks x GA ${ga} reproduce one process with GA ${world * ga} (losses, grad norms, adapter within 1e-6)`, { timeout: 180_000 }, async () => {
    const single = join(tmp, `single-${world}`);
    const one = spawnSync(process.execPath, ["bin/tuna.js", "train", ...flags(single, world * ga)], { cwd: root, encoding: "utf8", timeout: 170_000 });
    assert.equal(one.status, 0, one.stderr);
    const multi = join(tmp, `multi-${world}`);
    const port = await freePort();
    const many = spawnSync(process.execPath, ["bin/tuna.js", "launch", "--nproc_per_node", String(world), "--master_port", String(port), "tuna", "train", ...flags(multi, ga)], {
      cwd: root,
      encoding: "utf8",
      timeout: 170_000,
    });
    assert.equal(many.status, 0, many.stderr);
    const a = await readRun(single);
    const b = await readRun(multi);
    assert.equal(b.metrics.length, 5);
    b.metrics.forEach((m, i) => {
      const s = a.metrics[i]!;
      assert.equal(m.step, s.step);
      assert.ok(relative(m.loss, s.loss) < 1e-6, `step ${m.step}: loss ${m.loss} vs ${s.loss}`);
      assert.ok(relative(m.grad_norm, s.grad_norm) < 1e-6, `step ${m.step}: grad norm ${m.grad_norm} vs ${s.grad_norm}`);
    });
    assert.deepEqual([...b.adapter.keys()], [...a.adapter.keys()]);
    let num = 0;
    let den = 0;
    for (const [name, values] of b.adapter) {
      const ref = a.adapter.get(name)!;
      for (let i = 0; i < ref.length; i++) {
        num += (values[i]! - ref[i]!) ** 2;
        den += ref[i]! ** 2;
      }
    }
    assert.ok(Math.sqrt(num / den) < 1e-6, `adapter relative difference ${Math.sqrt(num / den)}`);
    // Rank 0 alone reports: one "done" line.
    assert.equal((many.stdout.match(/^done: /gm) ?? []).length, 1, many.stdout);
  });
}
