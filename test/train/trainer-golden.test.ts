// tuna train against TRL's SFTTrainer itself (test/golden/trainer, written by tools/golden/make_trainer_golden.py
// with torch 2.13, transformers 5.17, peft 0.21 and trl 1.13 on the CPU): the same model, the same initial
// adapter (tuna's, loaded into PEFT), the same data and settings — batch 2, gradient accumulation 2, cosine
// schedule with warmup, weight decay, clipping, 8 steps across an epoch boundary in the Trainer's data order —
// must give the same loss, gradient norm and learning rate at every step, and the same final adapter, for a
// prompt/completion dataset (completion-only loss), a conversational one through the chat template, plain text,
// and BFD packing.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openWeightsFile, type WeightSource } from "../../src/io/safetensors/checkpoint.ts";
import { runCli } from "../cli/run-cli.ts";

const GOLDEN = new URL("../golden/trainer/", import.meta.url).pathname;
const MODEL = new URL("../../examples/tiny-llama", import.meta.url).pathname;

interface Golden {
  versions: Record<string, string>;
  steps: number;
  flags: string[];
  cases: Record<string, { data: string; flags: string[]; logs: { step: number; loss: number; grad_norm: number; learning_rate: number }[] }>;
}
const golden = JSON.parse(await readFile(join(GOLDEN, "golden.json"), "utf8")) as Golden;

const root = await mkdtemp(join(tmpdir(), "tuna-trainer-golden-"));
after(() => rm(root, { recursive: true, force: true }));

async function train(name: string, extra: string[] = []): Promise<string> {
  const c = golden.cases[name]!;
  const out = join(root, `${name}${extra.length === 0 ? "" : "-init"}`);
  const run = await runCli(["train", "--model_name_or_path", MODEL, "--dataset_name", join(GOLDEN, c.data), "--output_dir", out, ...golden.flags, ...c.flags, ...extra]);
  assert.equal(run.code, 0, run.err);
  return out;
}

async function floats(w: WeightSource, name: string): Promise<Float32Array> {
  const info = w.info(name);
  assert.equal(info.dtype, "F32", name);
  const bytes = await w.readTensor(name);
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

/** max |a - b| / max |b| over every tensor of `want`, which `got` must hold too with the same shapes. */
async function adapterDistance(gotPath: string, wantPath: string): Promise<number> {
  const [got, want] = await Promise.all([openWeightsFile(gotPath), openWeightsFile(wantPath)]);
  try {
    assert.deepEqual(got.names(), want.names());
    let worst = 0;
    for (const name of want.names()) {
      assert.deepEqual(got.info(name).shape, want.info(name).shape, name);
      const [a, b] = await Promise.all([floats(got, name), floats(want, name)]);
      let diff = 0;
      let scale = 0;
      for (let i = 0; i < b.length; i++) {
        diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
        scale = Math.max(scale, Math.abs(b[i]!));
      }
      worst = Math.max(worst, diff / Math.max(scale, 1e-12));
    }
    return worst;
  } finally {
    await Promise.all([got.close(), want.close()]);
  }
}

void test("tuna's initial adapter is the one the golden started PEFT from (else regenerate: tools/golden/make_trainer_golden.py)", async () => {
  const out = await train("text", ["--learning_rate", "0", "--max_steps", "1"]);
  assert.equal(await adapterDistance(join(out, "adapter_model.safetensors"), join(GOLDEN, "init.safetensors")), 0);
});

for (const name of Object.keys(golden.cases)) {
  void test(`${name}: every step's loss, gradient norm and learning rate, and the final adapter, equal TRL ${golden.versions["trl"]} SFTTrainer's`, async () => {
    const out = await train(name);
    const logs = (await readFile(join(out, "metrics.jsonl"), "utf8"))
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, number>)
      .filter((e) => "loss" in e);
    const want = golden.cases[name]!.logs;
    assert.equal(want.length, golden.steps);
    assert.equal(logs.length, want.length);
    const close = (a: number, b: number, tol: number, what: string): void => {
      assert.ok(Math.abs(a - b) <= tol * Math.max(Math.abs(b), 1e-12), `${name} step ${what}: tuna ${a}, TRL ${b}`);
    };
    for (const [i, w] of want.entries()) {
      const got = logs[i]!;
      assert.equal(got["step"], w.step);
      // float32 sums in another order: the measured agreement is ~1e-7 relative.
      close(got["loss"]!, w.loss, 1e-6, `${w.step} loss`);
      close(got["grad_norm"]!, w.grad_norm, 1e-5, `${w.step} grad_norm`);
      close(got["learning_rate"]!, w.learning_rate, 1e-12, `${w.step} learning_rate`);
    }
    // The adapters moved (the init is not the result), and to the same place.
    assert.ok((await adapterDistance(join(out, "adapter_model.safetensors"), join(GOLDEN, "init.safetensors"))) > 1e-3);
    const distance = await adapterDistance(join(out, "adapter_model.safetensors"), join(GOLDEN, `${name}.final.safetensors`));
    assert.ok(distance < 1e-4, `${name}: final adapter differs by ${distance} (relative to each tensor's largest value)`);
  });
}
