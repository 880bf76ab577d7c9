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
import { adapterDistance, assertClose, runAndReadSteps } from "./golden-run.ts";

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

function train(name: string, out: string, extra: string[] = []): Promise<Record<string, number>[]> {
  const c = golden.cases[name]!;
  // "{golden}" in a case's flags is the golden folder (its template file).
  const flags = c.flags.map((f) => f.replaceAll("{golden}", GOLDEN.replace(/\/$/, "")));
  return runAndReadSteps("train", ["--model_name_or_path", MODEL, "--dataset_name", join(GOLDEN, c.data), ...golden.flags, ...flags, ...extra], out);
}

void test("tuna's initial adapter is the one the golden started PEFT from (else regenerate: tools/golden/make_trainer_golden.py)", async () => {
  const out = join(root, "init");
  await train("text", out, ["--learning_rate", "0", "--max_steps", "1"]);
  assert.equal(await adapterDistance(join(out, "adapter_model.safetensors"), join(GOLDEN, "init.safetensors")), 0);
});

for (const name of Object.keys(golden.cases)) {
  void test(`${name}: every step's loss, gradient norm and learning rate, and the final adapter, equal TRL ${golden.versions["trl"]} SFTTrainer's`, async () => {
    const out = join(root, name);
    const logs = await train(name, out);
    const want = golden.cases[name]!.logs;
    assert.equal(want.length, golden.steps);
    assert.equal(logs.length, want.length);
    for (const [i, w] of want.entries()) {
      const got = logs[i]!;
      assert.equal(got["step"], w.step);
      // float32 sums in another order: the measured agreement is ~1e-7 relative.
      assertClose(got["loss"], w.loss, 1e-6, 0, `${name} step ${w.step} loss`);
      assertClose(got["grad_norm"], w.grad_norm, 1e-5, 0, `${name} step ${w.step} grad_norm`);
      assertClose(got["learning_rate"], w.learning_rate, 1e-12, 0, `${name} step ${w.step} learning_rate`);
    }
    // The adapters moved (the init is not the result), and to the same place.
    assert.ok((await adapterDistance(join(out, "adapter_model.safetensors"), join(GOLDEN, "init.safetensors"))) > 1e-3);
    const distance = await adapterDistance(join(out, "adapter_model.safetensors"), join(GOLDEN, `${name}.final.safetensors`));
    assert.ok(distance < 1e-4, `${name}: final adapter differs by ${distance} (relative to each tensor's largest value)`);
  });
}
