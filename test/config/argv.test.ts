// Command-line forms accepted like Python argparse/HfArgumentParser: spellings, prefixes, booleans,
// unknown flags with suggestions, missing values.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseTrainArgs } from "../../src/config/index.ts";
import { scanArgs } from "../../src/config/argv.ts";
import { isTunaError } from "../../src/util/errors.ts";

const MODEL = ["--model_name_or_path", "m"];

/** Runs `fn`, expecting a TunaError with `code`; returns its message. */
async function rejection(fn: () => Promise<unknown>, code: string): Promise<string> {
  try {
    await fn();
  } catch (e) {
    assert.ok(isTunaError(e), `expected a TunaError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e.message;
  }
  assert.fail("expected an error");
}

void test("--name value, --name=value and --name-with-dashes are the same flag", async () => {
  for (const form of [["--lora_r", "8"], ["--lora-r", "8"], ["--lora_r=8"], ["--lora-r=8"]]) {
    const { config, sources } = await parseTrainArgs([...MODEL, ...form]);
    assert.equal(config.lora_r, 8, form.join(" "));
    assert.equal(sources.lora_r.kind, "flag");
  }
  const dashed = await parseTrainArgs(["--model-name-or-path=x", "--per-device-train-batch-size", "3"]);
  assert.equal(dashed.config.model_name_or_path, "x");
  assert.equal(dashed.config.per_device_train_batch_size, 3);
});

void test("a value may contain '=' and may be negative", async () => {
  const { config } = await parseTrainArgs([...MODEL, "--output_dir=a=b", "--max_steps", "-1", "--num_train_epochs", "-.5", "--max_steps=10", "--seed", "+3"]);
  assert.equal(config.output_dir, "a=b");
  assert.equal(config.max_steps, 10);
  assert.equal(config.seed, 3);
  assert.equal(config.num_train_epochs, -0.5);
});

void test("an unambiguous prefix resolves to its field; the recorded source is the flag as typed", async () => {
  const { config, sources } = await parseTrainArgs([...MODEL, "--max_seq_len", "2048", "--gradient_acc", "2", "--neft", "5"]);
  assert.equal(config.max_seq_length, 2048);
  assert.deepEqual(sources.max_seq_length, { kind: "flag", flag: "--max_seq_len" });
  assert.equal(config.gradient_accumulation_steps, 2);
  assert.equal(config.neftune_noise_alpha, 5);
});

void test("an ambiguous prefix is an error listing the candidates", async () => {
  const message = await rejection(() => parseTrainArgs([...MODEL, "--max", "5"]), "CONFIG_INVALID");
  for (const candidate of ["--max_steps", "--max_grad_norm", "--max_seq_length", "--max_length"]) {
    assert.ok(message.includes(candidate), `${candidate} missing from: ${message}`);
  }
  const evalMessage = await rejection(() => parseTrainArgs([...MODEL, "--eval", "no"]), "CONFIG_INVALID");
  assert.match(evalMessage, /ambiguous flag --eval.*--eval_strategy.*--eval_steps/);
});

void test("an exact name wins over prefix matching", async () => {
  // --packing is also a prefix of --packing_strategy; --config of --config_file; --lora_r of nothing else.
  const { config } = await parseTrainArgs([...MODEL, "--packing", "--eval_steps", "7", "--fp16", "true"]);
  assert.equal(config.packing, true);
  assert.equal(config.packing_strategy, "bfd");
  assert.equal(config.eval_steps, 7);
  assert.equal(config.fp16, true);
});

void test("aliases: max_length sets max_seq_length, evaluation_strategy sets eval_strategy; the last flag wins", async () => {
  const { config, sources } = await parseTrainArgs([...MODEL, "--max_seq_length", "100", "--max_length", "300", "--evaluation_strategy", "epoch"]);
  assert.equal(config.max_seq_length, 300);
  assert.deepEqual(sources.max_seq_length, { kind: "flag", flag: "--max_length" });
  assert.equal(config.eval_strategy, "epoch");
});

void test("booleans accept HF's words in any case, and a bare flag means true", async () => {
  const words: [string, boolean][] = [
    ["True", true], ["False", false], ["true", true], ["false", false], ["1", true], ["0", false],
    ["yes", true], ["no", false], ["YES", true], ["t", true], ["n", false],
  ];
  for (const [word, expected] of words) {
    const { config } = await parseTrainArgs([...MODEL, "--bf16", word]);
    assert.equal(config.bf16, expected, word);
    const inline = await parseTrainArgs([...MODEL, `--bf16=${word}`]);
    assert.equal(inline.config.bf16, expected, `--bf16=${word}`);
  }
  // Bare: followed by another flag, or at the end.
  const bare = await parseTrainArgs(["--packing", "--gradient_checkpointing", ...MODEL, "--use_peft_lora"]);
  assert.equal(bare.config.packing, true);
  assert.equal(bare.config.gradient_checkpointing, true);
  assert.equal(bare.config.use_peft_lora, true);
});

void test("a boolean flag with a non-boolean value is an invalid value", async () => {
  const message = await rejection(() => parseTrainArgs([...MODEL, "--packing", "maybe"]), "CONFIG_INVALID");
  assert.match(message, /packing = maybe \(flag --packing\): expected bool/);
  const fileMessage = await rejection(() => parseTrainArgs([...MODEL, "--packing", "x.yaml"]), "CONFIG_INVALID");
  assert.match(fileMessage, /use --config/);
});

void test("an unknown flag suggests the nearest known one", async () => {
  const message = await rejection(() => parseTrainArgs([...MODEL, "--lora_rank", "8"]), "CONFIG_UNKNOWN");
  assert.match(message, /unknown flag --lora_rank: did you mean --lora_r\?/);
  const typo = await rejection(() => parseTrainArgs([...MODEL, "--learnig_rate", "1e-4"]), "CONFIG_UNKNOWN");
  assert.match(typo, /did you mean --learning_rate\?/);
  // The unknown flag's value is not reported as a stray positional argument.
  assert.doesNotMatch(typo, /unexpected argument/);
  const far = await rejection(() => parseTrainArgs([...MODEL, "--zzzzzzzzzzzzzzzzzz", "1"]), "CONFIG_UNKNOWN");
  assert.match(far, /tuna train --help/);
});

void test("Python-stack flags: ignored with a notice (their values consumed), or refused with the reason and what to use", async () => {
  const ok = await parseTrainArgs([...MODEL, "--do_train", "--dataloader_num_workers", "4", "--torch_dtype", "bfloat16", "--attn_implementation=flash_attention_2", "--use_rslora", "--lora_r", "8"]);
  assert.equal(ok.config.lora_r, 8);
  assert.equal(ok.config.use_rslora, true);
  assert.deepEqual(
    ok.notices.map((n) => n.split(" is ignored")[0]),
    ["--do_train", "--dataloader_num_workers", "--torch_dtype", "--attn_implementation"],
  );
  assert.match(ok.notices[1]!, /no loader workers/);
  assert.equal((await parseTrainArgs([...MODEL, "--use_peft_lora", "--use_dora", "True"])).config.use_dora, true);
  assert.match(await rejection(() => parseTrainArgs([...MODEL, "--use_dora", "True"]), "CONFIG_INVALID"), /DoRA is a kind of LoRA adapter; add --use_peft_lora True/);
  const loftq = await rejection(() => parseTrainArgs([...MODEL, "--loftq_config", "{}"]), "CONFIG_INVALID");
  assert.match(loftq, /--loftq_config is a transformers\/TRL\/PEFT option tuna does not take: LoftQ is not implemented/);
  const start = await rejection(() => parseTrainArgs([...MODEL, "--eval_on_start"]), "CONFIG_INVALID");
  assert.match(start, /--eval_on_start .*run tuna eval on the base model/);
  const deepspeed = await rejection(() => parseTrainArgs([...MODEL, "--deepspeed", "ds.json"]), "CONFIG_INVALID");
  assert.match(deepspeed, /--config_file ds\.yaml/);
  assert.doesNotMatch(deepspeed, /unexpected argument/);
  // A look-alike with another meaning is not suggested: rslora is not unsloth.
  const far = await rejection(() => parseTrainArgs([...MODEL, "--use_rsloraa"]), "CONFIG_UNKNOWN");
  assert.match(far, /did you mean --use_rslora\?/);
  const other = await rejection(() => parseTrainArgs([...MODEL, "--use_lsora"]), "CONFIG_UNKNOWN");
  assert.doesNotMatch(other, /use_unsloth/);
});

void test("a value flag without its value is an error", async () => {
  for (const argv of [[...MODEL, "--lora_r"], [...MODEL, "--lora_r", "--bf16"], ["--output_dir", ...MODEL]]) {
    const message = await rejection(() => parseTrainArgs(argv), "CONFIG_INVALID");
    assert.match(message, /expects a value/, argv.join(" "));
  }
});

void test("a stray positional that is not a config file is an error", async () => {
  const message = await rejection(() => parseTrainArgs([...MODEL, "--lora_r", "8", "16"]), "CONFIG_INVALID");
  assert.match(message, /unexpected argument "16"/);
});

void test("scanArgs keeps command-line order and reports every problem", () => {
  const scanned = scanArgs(["--lora_r", "8", "--nope", "--lora-r=4", "cfg.yaml", "--bf16"]);
  assert.deepEqual(
    scanned.assignments.map((a) => [a.field, a.raw, a.flag]),
    [["lora_r", "8", "--lora_r"], ["lora_r", "4", "--lora-r"], ["bf16", "true", "--bf16"]],
  );
  assert.deepEqual(scanned.positionals, ["cfg.yaml"]);
  assert.equal(scanned.problems.length, 1);
});
