// push_to_hub against the loopback fake hub (never the real one): the repo is created (private when asked),
// each checkpoint's model files are pushed while training and the output folder at the end, with the exact
// bytes written locally; hub_strategy checkpoint adds last-checkpoint/; a bad token fails the final push with a
// HUB error that never shows the token, and the local output stays complete.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { runCliWithEnv } from "../cli/run-cli.ts";
import { FAKE_WRITE_TOKEN, startFakeHub } from "../hub/fake-hub.ts";
import { filesToPush } from "../../src/train/push.ts";

const root = resolve(import.meta.dirname, "../..");

const flags = (out: string, extra: string[]): string[] => [
  "train", "--model_name_or_path", join(root, "examples/tiny-llama"), "--dataset_name", join(root, "test/fixtures/chat-small.jsonl"), "--splits", "train",
  "--chat_template_format", "chatml", "--use_peft_lora", "--lora_r", "4", "--packing", "--max_seq_length", "48", "--max_steps", "4", "--logging_steps", "1",
  "--save_strategy", "steps", "--save_steps", "2", "--device", "cpu", "--output_dir", out, "--push_to_hub", "--hub_model_id", "me/tiny-sft", ...extra,
];

void test("push_to_hub every_save: the repo created private, each checkpoint's model files and the final folder pushed byte for byte", async () => {
  const hub = await startFakeHub([]);
  try {
    const out = join(await mkdtemp(join(tmpdir(), "tuna-push-")), "out");
    const r = await runCliWithEnv(flags(out, ["--hub_private_repo"]), { HF_ENDPOINT: hub.url, HF_TOKEN: FAKE_WRITE_TOKEN, HF_HOME: join(out, "..", "hf") });
    assert.equal(r.code, 0, r.err);
    assert.ok(!r.err.includes(FAKE_WRITE_TOKEN) && !r.out.includes(FAKE_WRITE_TOKEN));
    const repo = hub.pushed.get("me/tiny-sft");
    assert.ok(repo !== undefined);
    assert.equal(repo.private, true);
    assert.deepEqual(repo.commits.map((c) => c.title), ["Training in progress, step 2", "Training in progress, step 4", "End of training"]);
    const during = Object.keys(repo.commits[0]!.files);
    for (const f of ["adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json"]) assert.ok(during.includes(f), `${f} in ${during.join(", ")}`);
    assert.ok(!during.some((f) => /optimizer|trainer_state|rng_state|scheduler/.test(f)), `only the model's files while training: ${during.join(", ")}`);
    const final = repo.commits[2]!.files;
    for (const f of ["adapter_model.safetensors", "adapter_config.json", "README.md", "metrics.jsonl"]) {
      assert.ok(final[f] !== undefined, `${f} pushed`);
      assert.deepEqual(final[f], await readFile(join(out, f)), `${f} byte for byte`);
    }
    assert.ok(!Object.keys(final).some((f) => f.startsWith("checkpoint-")));
    const writes = hub.requests.filter((q) => q.method === "POST");
    assert.ok(writes.every((q) => q.authorization === `Bearer ${FAKE_WRITE_TOKEN}`));
  } finally {
    await hub.close();
  }
});

void test("hub_strategy checkpoint also pushes the latest checkpoint as last-checkpoint/; a wrong token fails the final push without showing it", async () => {
  const hub = await startFakeHub([]);
  try {
    const out = join(await mkdtemp(join(tmpdir(), "tuna-push-")), "out");
    const r = await runCliWithEnv(flags(out, ["--hub_strategy", "checkpoint"]), { HF_ENDPOINT: hub.url, HF_TOKEN: FAKE_WRITE_TOKEN, HF_HOME: join(out, "..", "hf") });
    assert.equal(r.code, 0, r.err);
    const titles = hub.pushed.get("me/tiny-sft")!.commits.map((c) => c.title);
    assert.deepEqual(titles.slice(0, 2), ["Training in progress, step 2", "Training in progress, step 2 (last-checkpoint)"]);
    const last = hub.pushed.get("me/tiny-sft")!.commits[1]!.files;
    assert.ok(Object.keys(last).every((f) => f.startsWith("last-checkpoint/")));
    assert.ok(Object.keys(last).some((f) => f.startsWith("last-checkpoint/optimizer")), "the whole checkpoint, optimizer included");

    const bad = join(await mkdtemp(join(tmpdir(), "tuna-push-bad-")), "out");
    const secret = "hf_not_the_right_token_987654321";
    const failed = await runCliWithEnv(flags(bad, ["--hub_strategy", "end"]), { HF_ENDPOINT: hub.url, HF_TOKEN: secret, HF_HOME: join(bad, "..", "hf") });
    assert.equal(failed.code, 1);
    assert.match(failed.err, /error \[HUB\]: push_to_hub to me\/tiny-sft at http:\/\/127\.0\.0\.1:\d+ failed: HTTP 401.*set HF_TOKEN to a write token/);
    assert.ok(!failed.err.includes(secret) && !failed.out.includes(secret));
    assert.ok((await filesToPush(bad)).includes("adapter_model.safetensors"), "the run's output is complete locally");
  } finally {
    await hub.close();
  }
});
