// tuna dpo against TRL's DPOTrainer itself (test/golden/dpo-trainer, written by
// tools/golden/make_dpo_trainer_golden.py with torch 2.13, transformers 5.17, peft 0.21 and trl 1.13 on the CPU):
// the same model, initial adapter (tuna's, loaded into PEFT; the reference is that adapter at its start, the base),
// data and settings — batch 2, gradient accumulation 2, cosine with warmup, weight decay, clipping, max_length 48,
// 6 steps in the Trainer's data order — must give TRL's loss, grad norm, rewards and log-probabilities at every step
// and its final adapter: plain-text pairs (BOS from the tokenizer, EOS appended), conversational pairs (the chat
// template's own ends, some cut by max_length), IPO (per-token means in the loss, sums in the metrics), LD-DPO's
// ld_alpha, f-DPO (js_divergence; alpha_divergence with IPO; forward_kl with hinge), and MPO's weighted loss list.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { adapterDistance, assertClose, runAndReadSteps } from "../golden-run.ts";

const GOLDEN = new URL("../../golden/dpo-trainer/", import.meta.url).pathname;
const MODEL = new URL("../../../examples/tiny-llama", import.meta.url).pathname;
const METRICS = ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"] as const;

interface Golden {
  versions: Record<string, string>;
  steps: number;
  flags: string[];
  cases: Record<string, { data: string; flags: string[]; logs: Record<string, number>[] }>;
}
const golden = JSON.parse(await readFile(join(GOLDEN, "golden.json"), "utf8")) as Golden;

const root = await mkdtemp(join(tmpdir(), "tuna-dpo-golden-"));
after(() => rm(root, { recursive: true, force: true }));

// f-DPO's scores take the log-ratio t = logp - ref logp through e^-t and the like; t is a difference of two
// float32 sums of ~-100, so its rounding (~1e-5 absolute) shows in the gradients at ~1e-5 relative (measured
// 1.4e-5 for forward_kl with hinge) and the final adapter moves accordingly (5e-4 measured for alpha 0.3 with IPO).
const F_DIVERGENCE = new Set(["js", "alpha-ipo", "forward-kl-hinge"]);

for (const name of Object.keys(golden.cases)) {
  void test(`${name}: every step's loss, grad norm, rewards and log-probabilities, and the final adapter, equal TRL ${golden.versions["trl"]} DPOTrainer's`, async () => {
    const c = golden.cases[name]!;
    const out = join(root, name);
    const logs = await runAndReadSteps("dpo", ["--model_name_or_path", MODEL, "--dataset_name", join(GOLDEN, c.data), ...golden.flags, ...c.flags], out);
    assert.equal(c.logs.length, golden.steps);
    assert.equal(logs.length, c.logs.length);
    for (const [i, w] of c.logs.entries()) {
      const got = logs[i]!;
      const at = `${name} step ${w["step"]}`;
      assert.equal(got["step"], w["step"]);
      assertClose(got["loss"], w["loss"]!, 1e-6, 0, `${at} loss`);
      assertClose(got["grad_norm"], w["grad_norm"]!, F_DIVERGENCE.has(name) ? 5e-5 : 1e-5, 0, `${at} grad_norm`);
      assertClose(got["learning_rate"], w["learning_rate"]!, 1e-12, 0, `${at} learning_rate`);
      // Rewards are beta x a difference of two sums of ~100 in float32: absolute agreement, ~1e-6 measured.
      for (const k of METRICS) assertClose(got[k], w[k]!, 1e-6, k.startsWith("rewards/") ? 1e-5 : 0, `${at} ${k}`);
    }
    assert.ok((await adapterDistance(join(out, "adapter_model.safetensors"), join(GOLDEN, "init.safetensors"))) > 1e-3);
    // Adam divides by the root of tiny second moments, which magnifies float-order differences in near-zero
    // gradients: measured 1e-5 to 1.3e-4 (LD-DPO) of each tensor's largest value, while every logged step agrees to 1e-7.
    const distance = await adapterDistance(join(out, "adapter_model.safetensors"), join(GOLDEN, `${name}.final.safetensors`));
    assert.ok(distance < (F_DIVERGENCE.has(name) ? 1e-3 : 3e-4), `${name}: final adapter differs by ${distance} (relative to each tensor's largest value)`);
  });
}
