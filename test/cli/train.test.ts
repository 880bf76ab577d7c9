// `tuna train` through the CLI: help, --print_config, the honest "not implemented yet" error,
// unsupported features, and configuration errors turned into exit codes by main().
import { test } from "node:test";
import assert from "node:assert/strict";
import { main } from "../../src/cli/main.ts";
import { trainCommand } from "../../src/cli/commands/train.ts";
import { memoryOutput } from "../../src/cli/output.ts";
import { isTunaError } from "../../src/util/errors.ts";

const MODEL = ["--model_name_or_path", "/models/llama"];
const DEEPSPEED = new URL("../config/fixtures/deepspeed_config_z3_qlora.yaml", import.meta.url).pathname;

void test("`tuna train --help` and -h print the grouped help and exit 0", async () => {
  for (const flag of ["--help", "-h"]) {
    const output = memoryOutput();
    assert.equal(await main(["train", flag], output), 0);
    const text = output.stdout.join("\n");
    assert.match(text, /^usage: tuna train/);
    assert.match(text, /\n {2}--lora_r int >= 1 {2}\(default: 64\)\n/);
    assert.match(text, /\ntraining arguments:\n/);
    assert.deepEqual(output.stderr, []);
  }
  // --help wins even next to invalid flags.
  const output = memoryOutput();
  assert.equal(await trainCommand(["--lora_r", "x", "--help"], output), 0);
});

void test("--print_config prints the resolved configuration and exits 0", async () => {
  const output = memoryOutput();
  const code = await main(["train", ...MODEL, "--lora_r", "8", "--config_file", DEEPSPEED, "--bf16", "--print_config"], output);
  assert.equal(code, 0);
  const text = output.stdout.join("\n");
  assert.match(text, /^model_name_or_path:\s+\/models\/llama\s+# \* flag --model_name_or_path$/m);
  assert.match(text, /^lora_r:\s+8\s+# \* flag --lora_r$/m);
  assert.match(text, /DeepSpeed ZeRO stage 3/);
  assert.deepEqual(output.stderr, []);
});

void test("a plain run prints no configuration; --log_level debug prints what differs from the defaults, then the recipe runs (here: a model that does not exist)", async () => {
  const plain = memoryOutput();
  assert.equal(await main(["train", ...MODEL, "--output_dir", "/tmp/tuna-train-cli-test-missing"], plain), 1);
  assert.doesNotMatch(plain.stderr.join("\n"), /configuration that differs/);
  const output = memoryOutput();
  assert.equal(await main(["train", ...MODEL, "--output_dir", "/tmp/tuna-train-cli-test-missing", "--log_level", "debug"], output), 1);
  const err = output.stderr.join("\n");
  assert.match(err, /^# tuna train: configuration that differs from the defaults/);
  assert.match(err, /^output_dir: +\/tmp\/tuna-train-cli-test-missing/m);
  assert.doesNotMatch(err, /^lora_dropout:/m, "fields at their defaults are left out");
  assert.ok(err.split("\n").length < 30, "the header is short");
  assert.match(err, /tuna train: error \[(FILE_NOT_FOUND|HUB)\]/);
});

void test("push_to_hub without hub_model_id, and use_unsloth, are refused with UNSUPPORTED before anything runs", async () => {
  for (const [flag, pattern] of [["--push_to_hub", /push_to_hub needs --hub_model_id namespace\/name/], ["--use_unsloth", /use_unsloth is not supported/]] as const) {
    const output = memoryOutput();
    await assert.rejects(trainCommand([...MODEL, flag, "True"], output), (e) => {
      assert.ok(isTunaError(e));
      assert.equal(e.code, "UNSUPPORTED");
      assert.match(e.message, pattern);
      return true;
    });
    assert.deepEqual(output.stdout, [], "nothing printed before the refusal");
    // --print_config still shows the configuration, with a note.
    const printed = memoryOutput();
    assert.equal(await trainCommand([...MODEL, flag, "--print_config"], printed), 0);
    assert.match(printed.stderr.join("\n"), pattern);
  }
});

void test("configuration errors reach the user through main() with exit code 1", async () => {
  const output = memoryOutput();
  assert.equal(await main(["train", ...MODEL, "--lora_rank", "8"], output), 1);
  assert.match(output.stderr.join("\n"), /error \[CONFIG_UNKNOWN\].*\n.*unknown flag --lora_rank: did you mean --lora_r\?/);
  const invalid = memoryOutput();
  assert.equal(await main(["train", ...MODEL, "--bf16", "--fp16", "--lora_dropout", "2"], invalid), 1);
  const text = invalid.stderr.join("\n");
  assert.match(text, /error \[CONFIG_INVALID\]: invalid train configuration \(2 problems\)/);
  assert.match(text, /lora_dropout = 2 \(flag --lora_dropout\): expected float in \[0, 1\)/);
});
