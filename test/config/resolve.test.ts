// parseTrainArgs end to end: the seed launch line, HF defaults, config files with flag overrides,
// every problem reported together with its source, and each cross-field conflict.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseTrainArgs } from "../../src/config/index.ts";
import { isTunaError } from "../../src/util/errors.ts";

const MODEL = ["--model_name_or_path", "m"];
const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;

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

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "tuna-config-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// The train.py arguments of the launch line in SEED-WORKFLOW.md, verbatim.
const SEED_ARGS = [
  "--seed", "100", "--model_name_or_path", "/workspace/Llama-2-7b-chat-hf",
  "--dataset_name", "smangrul/ultrachat-10k-chatml", "--chat_template_format", "chatml",
  "--add_special_tokens", "False", "--append_concat_token", "False", "--splits", "train,test",
  "--max_seq_len", "2048", "--num_train_epochs", "2", "--logging_steps", "5", "--log_level", "info", "--logging_strategy", "steps",
  "--evaluation_strategy", "epoch", "--save_strategy", "steps", "--save_steps", "100", "--save_total_limit", "10",
  "--bf16", "True", "--packing", "True", "--learning_rate", "1e-4", "--lr_scheduler_type", "cosine", "--weight_decay", "1e-4",
  "--warmup_ratio", "0.0", "--max_grad_norm", "1.0", "--output_dir", "/workspace/output/llama-sft-qlora-dsz3",
  "--per_device_train_batch_size", "1", "--per_device_eval_batch_size", "2", "--gradient_accumulation_steps", "4",
  "--use_flash_attn", "True", "--gradient_checkpointing", "True", "--use_reentrant", "True",
  "--dataset_text_field", "content", "--use_peft_lora", "True", "--lora_r", "8", "--lora_alpha", "16", "--lora_dropout", "0.1",
  "--lora_target_modules", "all-linear", "--use_4bit_quantization", "True", "--use_nested_quant", "True",
  "--bnb_4bit_compute_dtype", "bfloat16", "--bnb_4bit_quant_storage_dtype", "bfloat16",
  "--resume_from_checkpoint", "/workspace/output/llama-sft-qlora-dsz3/checkpoint-100",
];

void test("the seed workflow's launch line parses to its values", async () => {
  const { config, sources, launch } = await parseTrainArgs(SEED_ARGS);
  assert.equal(launch, undefined);
  assert.deepEqual(
    {
      seed: config.seed, model: config.model_name_or_path, dataset: config.dataset_name, template: config.chat_template_format,
      add_special_tokens: config.add_special_tokens, append_concat_token: config.append_concat_token, splits: config.splits,
      max_seq_length: config.max_seq_length, epochs: config.num_train_epochs, logging_steps: config.logging_steps,
      log_level: config.log_level, logging_strategy: config.logging_strategy, eval_strategy: config.eval_strategy,
      save_strategy: config.save_strategy, save_steps: config.save_steps, save_total_limit: config.save_total_limit,
      bf16: config.bf16, packing: config.packing, lr: config.learning_rate, scheduler: config.lr_scheduler_type,
      weight_decay: config.weight_decay, warmup_ratio: config.warmup_ratio, max_grad_norm: config.max_grad_norm,
      output_dir: config.output_dir, train_bs: config.per_device_train_batch_size, eval_bs: config.per_device_eval_batch_size,
      ga: config.gradient_accumulation_steps, flash: config.use_flash_attn, gc: config.gradient_checkpointing,
      reentrant: config.use_reentrant, text_field: config.dataset_text_field, peft: config.use_peft_lora,
      r: config.lora_r, alpha: config.lora_alpha, dropout: config.lora_dropout, targets: config.lora_target_modules,
      q4: config.use_4bit_quantization, nested: config.use_nested_quant, compute: config.bnb_4bit_compute_dtype,
      storage: config.bnb_4bit_quant_storage_dtype, resume: config.resume_from_checkpoint,
    },
    {
      seed: 100, model: "/workspace/Llama-2-7b-chat-hf", dataset: "smangrul/ultrachat-10k-chatml", template: "chatml",
      add_special_tokens: false, append_concat_token: false, splits: ["train", "test"],
      max_seq_length: 2048, epochs: 2, logging_steps: 5,
      log_level: "info", logging_strategy: "steps", eval_strategy: "epoch",
      save_strategy: "steps", save_steps: 100, save_total_limit: 10,
      bf16: true, packing: true, lr: 0.0001, scheduler: "cosine",
      weight_decay: 0.0001, warmup_ratio: 0, max_grad_norm: 1,
      output_dir: "/workspace/output/llama-sft-qlora-dsz3", train_bs: 1, eval_bs: 2,
      ga: 4, flash: true, gc: true,
      reentrant: true, text_field: "content", peft: true,
      r: 8, alpha: 16, dropout: 0.1, targets: "all-linear",
      q4: true, nested: true, compute: "bfloat16",
      storage: "bfloat16", resume: "/workspace/output/llama-sft-qlora-dsz3/checkpoint-100",
    },
  );
  // Untouched fields keep HF defaults.
  assert.equal(config.max_steps, -1);
  assert.equal(config.use_8bit_quantization, false);
  assert.equal(config.bnb_4bit_quant_type, "nf4");
  assert.deepEqual(sources.max_seq_length, { kind: "flag", flag: "--max_seq_len" });
  assert.deepEqual(sources.eval_strategy, { kind: "flag", flag: "--evaluation_strategy" });
  assert.deepEqual(sources.bnb_4bit_quant_type, { kind: "default" });
});

void test("the seed launch line with its accelerate DeepSpeed ZeRO-3 file", async () => {
  const { launch } = await parseTrainArgs(["--config_file", "deepspeed_config_z3_qlora.yaml", ...SEED_ARGS], { cwd: FIXTURES });
  assert.ok(launch !== undefined);
  assert.equal(launch.numProcesses, 2);
  assert.equal(launch.mixedPrecision, "bf16");
  assert.equal(launch.sharding.kind, "zero");
  assert.equal(launch.source, join(FIXTURES, "deepspeed_config_z3_qlora.yaml"));
});

void test("defaults are those of the peft example dataclasses and HF TrainingArguments", async () => {
  const { config, sources } = await parseTrainArgs(MODEL);
  assert.deepEqual(
    { ...config },
    {
      model_name_or_path: "m", model_revision: undefined, chat_template_format: "none", lora_alpha: 16, lora_dropout: 0.1, lora_r: 64,
      lora_target_modules: ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj", "up_proj", "gate_proj"],
      use_rslora: false, use_dora: false, use_nested_quant: false, bnb_4bit_compute_dtype: "float16", bnb_4bit_quant_storage_dtype: "uint8",
      bnb_4bit_quant_type: "nf4", use_flash_attn: false, use_peft_lora: false, use_8bit_quantization: false,
      use_4bit_quantization: false, use_reentrant: false, use_unsloth: false,
      dataset_name: "timdettmers/openassistant-guanaco", packing: false, packing_strategy: "bfd", dataset_text_field: "text",
      max_seq_length: 512, eos_token: undefined, pad_token: undefined, append_concat_token: true, add_special_tokens: false, splits: ["train", "test"],
      assistant_only_loss: false, chat_template_file: undefined, truncation_mode: "keep_start", drop_long_examples: false, skip_bad_rows: false,
      test_split_ratio: 0, completion_only_loss: undefined,
      output_dir: "trainer_output", overwrite_output_dir: false, resume_from_checkpoint: undefined, seed: 42,
      num_train_epochs: 3, max_steps: -1, per_device_train_batch_size: 8, per_device_eval_batch_size: 8,
      gradient_accumulation_steps: 1, learning_rate: 5e-5, lr_scheduler_type: "linear", warmup_ratio: 0, warmup_steps: 0,
      weight_decay: 0, adam_beta1: 0.9, adam_beta2: 0.999, adam_epsilon: 1e-8, max_grad_norm: 1, optim: "adamw_torch",
      bf16: false, fp16: false, group_by_length: false, train_sampling_strategy: "random", data_seed: undefined, dataloader_drop_last: false, nan_inf_policy: "stop", gradient_checkpointing: false,
      logging_strategy: "steps", logging_first_step: false, logging_steps: 500,
      log_level: "passive", eval_strategy: "no", eval_steps: undefined, save_strategy: "steps", save_steps: 500,
      save_total_limit: undefined, ddp_timeout: 60, ddp_bucket_cap_mb: undefined, neftune_noise_alpha: undefined, report_to: ["none"], run_name: undefined, push_to_hub: false, hub_model_id: undefined, hub_private_repo: false, hub_strategy: "every_save",
      config_file: undefined, device: "auto", config: undefined, print_config: false,
      beta: 0.1, loss_type: ["sigmoid"], loss_weights: undefined, label_smoothing: 0, max_prompt_length: undefined, max_completion_length: undefined,
      precompute_ref_log_probs: false, reference_free: false, rpo_alpha: undefined, ld_alpha: undefined, f_divergence_type: "reverse_kl", f_alpha_divergence_coef: 0.5, disable_dropout: true, discopop_tau: 0.05,
    },
  );
  assert.deepEqual(sources.lora_r, { kind: "default" });
});

void test("model_name_or_path is required", async () => {
  const message = await rejection(() => parseTrainArgs([]), "CONFIG_INVALID");
  assert.match(message, /model_name_or_path = \(unset\) \(default\): expected str; it is required/);
});

void test("YAML config file, with flags overriding it and sources recorded", async () => {
  await withTempDir(async (dir) => {
    const yaml = [
      "model_name_or_path: /models/llama",
      "lora_r: 16",
      "learning_rate: 2e-4",
      "lora_target_modules: [q_proj, v_proj]",
      "report_to: [tensorboard, jsonl]",
      "max_length: 1024",
      "packing: yes", // a YAML 1.2 string; read with HF's string_to_bool
      "bf16: true",
    ].join("\n");
    await writeFile(join(dir, "run.yaml"), yaml);
    const resolved = await parseTrainArgs(["run.yaml", "--lora_r", "32"], { cwd: dir });
    const file = join(dir, "run.yaml");
    assert.equal(resolved.configFile, file);
    assert.equal(resolved.config.model_name_or_path, "/models/llama");
    assert.equal(resolved.config.lora_r, 32);
    assert.deepEqual(resolved.sources.lora_r, { kind: "flag", flag: "--lora_r" });
    assert.equal(resolved.config.learning_rate, 0.0002);
    assert.deepEqual(resolved.sources.learning_rate, { kind: "file", path: file, key: "learning_rate" });
    assert.deepEqual(resolved.config.lora_target_modules, ["q_proj", "v_proj"]);
    assert.deepEqual(resolved.config.report_to, ["tensorboard", "jsonl"]);
    assert.equal(resolved.config.max_seq_length, 1024);
    assert.deepEqual(resolved.sources.max_seq_length, { kind: "file", path: file, key: "max_length" });
    assert.equal(resolved.config.packing, true);
    assert.equal(resolved.config.bf16, true);
    assert.equal(resolved.config.lora_alpha, 16);
  });
});

void test("JSON config file via --config, with a flag override", async () => {
  await withTempDir(async (dir) => {
    const json = { model_name_or_path: "gpt", num_train_epochs: 1.5, splits: "train_sft,test_sft", eval_strategy: "steps" };
    await writeFile(join(dir, "run.json"), JSON.stringify(json));
    const resolved = await parseTrainArgs(["--config", join(dir, "run.json"), "--eval_strategy", "no", "--report_to", "tensorboard,jsonl"]);
    assert.equal(resolved.config.model_name_or_path, "gpt");
    assert.equal(resolved.config.num_train_epochs, 1.5);
    assert.deepEqual(resolved.config.splits, ["train_sft", "test_sft"]);
    assert.equal(resolved.config.eval_strategy, "no");
    assert.deepEqual(resolved.config.report_to, ["tensorboard", "jsonl"]);
  });
});

void test("file values: null unsets an optional field, [all-linear] means all-linear", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "n.yaml");
    await writeFile(file, "model_name_or_path: m\nresume_from_checkpoint: null\nlora_target_modules: [all-linear]\n");
    const { config, sources } = await parseTrainArgs([file]);
    assert.equal(config.resume_from_checkpoint, undefined);
    assert.equal(sources.resume_from_checkpoint.kind, "file");
    assert.equal(config.lora_target_modules, "all-linear");
    await writeFile(file, "model_name_or_path: m\nlora_r: null\nlora_target_modules: [q_proj, all-linear]\n");
    const message = await rejection(() => parseTrainArgs([file]), "CONFIG_INVALID");
    assert.ok(message.includes(`lora_r = null (file ${file}): expected int >= 1`), message);
    assert.match(message, /lora_target_modules = \["q_proj", "all-linear"\]/);
  });
});

void test("unknown and flag-only keys in a file are errors naming the file", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "bad.yml");
    await writeFile(file, "model_name_or_path: m\nlora_rr: 8\n");
    const message = await rejection(() => parseTrainArgs([file]), "CONFIG_UNKNOWN");
    assert.ok(message.includes(`unknown key "lora_rr" in file ${file}: did you mean lora_r?`), message);
    await writeFile(file, "model_name_or_path: m\nconfig: other.yaml\nmax_length: 5\nmax_seq_length: 6\n");
    const message2 = await rejection(() => parseTrainArgs([file]), "CONFIG_INVALID");
    assert.match(message2, /only accepted as a command-line flag/);
    assert.match(message2, /sets max_seq_length twice/);
  });
});

void test("a missing or malformed config file is a clear error", async () => {
  await withTempDir(async (dir) => {
    const missing = await rejection(() => parseTrainArgs([join(dir, "nope.yaml")]), "FILE_NOT_FOUND");
    assert.ok(missing.includes(join(dir, "nope.yaml")));
    await writeFile(join(dir, "broken.yaml"), "a: [1, 2\nb: c\n");
    const broken = await rejection(() => parseTrainArgs(["broken.yaml"], { cwd: dir }), "FILE_FORMAT");
    assert.match(broken, /is not valid YAML/);
    await writeFile(join(dir, "list.json"), "[1, 2]");
    const list = await rejection(() => parseTrainArgs(["list.json"], { cwd: dir }), "FILE_FORMAT");
    assert.match(list, /mapping/);
    const two = await rejection(() => parseTrainArgs(["a.yaml", "--config", "b.yaml"], { cwd: dir }), "CONFIG_INVALID");
    assert.match(two, /more than one config file/);
  });
});

void test("every invalid field is reported in one error with its value, expectation and source", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "x.yaml");
    await writeFile(file, "model_name_or_path: m\nlora_dropout: 1.5\nbnb_4bit_quant_type: nf8\nsplits: [train, valid]\n");
    const message = await rejection(
      () => parseTrainArgs([file, "--lora_r", "0", "--learning_rate", "fast", "--optim", "sgd", "--report_to", "none,tensorboard"]),
      "CONFIG_INVALID",
    );
    const expectedLines = [
      `lora_dropout = 1.5 (file ${file}): expected float in [0, 1)`,
      `bnb_4bit_quant_type = "nf8" (file ${file}): expected nf4|fp4`,
      `splits = ["train", "valid"] (file ${file}): expected comma list of split names containing train or test`,
      "lora_r = 0 (flag --lora_r): expected int >= 1",
      "learning_rate = fast (flag --learning_rate): expected float >= 0",
      "optim = sgd (flag --optim): expected adamw_torch|",
      "report_to = none,tensorboard (flag --report_to): expected comma list of none|all|tensorboard|jsonl",
    ];
    for (const line of expectedLines) assert.ok(message.includes(line), `missing "${line}" in:\n${message}`);
    assert.match(message, /\(7 problems\)/);
  });
});

void test("range checks: warmup_ratio in [0, 1], lora_dropout in [0, 1), save_total_limit >= 1, steps", async () => {
  const bad: [string, string][] = [
    ["--warmup_ratio", "1.5"], ["--warmup_ratio", "-0.1"], ["--lora_dropout", "1"], ["--save_total_limit", "0"],
    ["--per_device_train_batch_size", "0"], ["--logging_steps", "0"], ["--save_steps", "2.5"], ["--lora_r", "8.5"],
    ["--neftune_noise_alpha", "0"], ["--chat_template_format", "llama"], ["--lora_target_modules", ""], ["--warmup_steps", "2.5"], ["--warmup_steps", "-1"],
  ];
  for (const [flag, value] of bad) {
    const message = await rejection(() => parseTrainArgs([...MODEL, flag, value]), "CONFIG_INVALID");
    assert.ok(message.includes(`(flag ${flag})`), message);
  }
  const ok = await parseTrainArgs([...MODEL, "--warmup_ratio", "1", "--lora_dropout", "0", "--save_total_limit", "1", "--logging_steps", "0.1", "--warmup_steps", "0.25"]);
  assert.equal(ok.config.warmup_ratio, 1);
  assert.equal(ok.config.warmup_steps, 0.25);
  assert.equal(ok.config.logging_steps, 0.1);
});

void test("conflicts are reported naming both fields and their sources", async () => {
  const cases: [string[], RegExp][] = [
    [["--use_4bit_quantization", "--use_8bit_quantization", "--use_peft_lora"], /use_4bit_quantization = true \(flag --use_4bit_quantization\) and use_8bit_quantization = true \(flag --use_8bit_quantization\): choose one/],
    [["--bf16", "True", "--fp16", "True"], /bf16 = true \(flag --bf16\) and fp16 = true \(flag --fp16\)/],
    [["--max_steps", "0", "--num_train_epochs", "0"], /max_steps = 0 \(flag --max_steps\) and num_train_epochs = 0 \(flag --num_train_epochs\): nothing to train/],
    [["--max_steps", "-1", "--num_train_epochs", "-2"], /nothing to train/],
    [["--use_4bit_quantization"], /use_peft_lora = false \(default\): a quantized base model cannot be trained directly/],
    [["--eval_strategy", "epoch", "--splits", "train"], /evaluation needs a split whose name contains test/],
    [["--splits", "test"], /no training split/],
    [["--group_by_length", "--train_sampling_strategy", "sequential"], /group_by_length = true \(flag --group_by_length\) with train_sampling_strategy = "sequential" .*give one order/],
    [["--train_sampling_strategy", "batch_rebalance"], /train_sampling_strategy = batch_rebalance/],
  ];
  for (const [flags, pattern] of cases) {
    const message = await rejection(() => parseTrainArgs([...MODEL, ...flags]), "CONFIG_INVALID");
    assert.match(message, pattern);
  }
  // max_steps > 0 makes epochs irrelevant, as in HF.
  const steps = await parseTrainArgs([...MODEL, "--max_steps", "10", "--num_train_epochs", "0"]);
  assert.equal(steps.config.max_steps, 10);
});

void test("a conflict is not reported when one of its fields is already invalid", async () => {
  const message = await rejection(() => parseTrainArgs([...MODEL, "--max_steps", "x", "--num_train_epochs", "0"]), "CONFIG_INVALID");
  assert.match(message, /\(1 problem\)/);
  assert.match(message, /max_steps = x/);
});

void test("eval_strategy steps without eval_steps evaluates every logging_steps, as HF does", async () => {
  const { config, sources } = await parseTrainArgs([...MODEL, "--eval_strategy", "steps", "--logging_steps", "25"]);
  assert.equal(config.eval_steps, 25);
  assert.deepEqual(sources.eval_steps, { kind: "derived", from: "logging_steps" });
  const explicit = await parseTrainArgs([...MODEL, "--eval_strategy", "steps", "--eval_steps", "40"]);
  assert.equal(explicit.config.eval_steps, 40);
});

void test("accelerate conflicts: unsloth with several processes, contradicting mixed precision", async () => {
  const ds = ["--config_file", "deepspeed_config_z3_qlora.yaml"]; // mixed_precision bf16, 2 processes
  const unsloth = await rejection(() => parseTrainArgs([...MODEL, ...ds, "--use_unsloth"], { cwd: FIXTURES }), "CONFIG_INVALID");
  assert.match(unsloth, /use_unsloth = true \(flag --use_unsloth\) with num_processes = 2 .*unsloth cannot run distributed/);
  const fp16 = await rejection(() => parseTrainArgs([...MODEL, ...ds, "--fp16", "True"], { cwd: FIXTURES }), "CONFIG_INVALID");
  assert.match(fp16, /fp16 = true \(flag --fp16\) contradicts mixed_precision = bf16/);
  await withTempDir(async (dir) => {
    await writeFile(join(dir, "fp16.yaml"), "distributed_type: MULTI_GPU\nnum_processes: 1\nmixed_precision: fp16\n");
    const bf16 = await rejection(() => parseTrainArgs([...MODEL, "--config_file", "fp16.yaml", "--bf16", "True"], { cwd: dir }), "CONFIG_INVALID");
    assert.match(bf16, /bf16 = true \(flag --bf16\) contradicts mixed_precision = fp16/);
    // One process: unsloth passes validation (the train command refuses it as UNSUPPORTED).
    const single = await parseTrainArgs([...MODEL, "--config_file", "fp16.yaml", "--use_unsloth", "--fp16"], { cwd: dir });
    assert.equal(single.config.use_unsloth, true);
  });
  // mixed_precision 'no' (the FSDP QLoRA file) is overridden by --bf16, as in the peft FSDP example.
  const fsdp = await parseTrainArgs([...MODEL, "--config_file", "fsdp_config_qlora.yaml", "--bf16", "True"], { cwd: FIXTURES });
  assert.equal(fsdp.launch?.mixedPrecision, "no");
  assert.equal(fsdp.config.bf16, true);
});

void test("a missing accelerate file keeps its own code alone, and joins the list with other problems", async () => {
  await rejection(() => parseTrainArgs([...MODEL, "--config_file", "/nonexistent/acc.yaml"]), "FILE_NOT_FOUND");
  const message = await rejection(() => parseTrainArgs([...MODEL, "--config_file", "/nonexistent/acc.yaml", "--lora_r", "-3"]), "CONFIG_INVALID");
  assert.match(message, /config_file = \/nonexistent\/acc.yaml \(flag --config_file\): accelerate config \/nonexistent\/acc.yaml does not exist/);
  assert.match(message, /lora_r = -3/);
});
