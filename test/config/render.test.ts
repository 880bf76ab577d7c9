// `tuna train --help` text (every field, grouped, with type, default and doc) and the resolved-config
// printout (non-default values marked with their source; valid YAML that parses back to the same config).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FIELD_NAMES, TRAIN_FIELDS, formatResolvedConfig, parseTrainArgs, renderTrainHelp } from "../../src/config/index.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;

// Defaults as the peft example and HF TrainingArguments document them, written out independently.
const EXPECTED_HELP_DEFAULTS: Record<string, string> = {
  model_revision: "unset", chat_template_format: "none", lora_alpha: "16", lora_dropout: "0.1", lora_r: "64",
  lora_target_modules: "q_proj,k_proj,v_proj,o_proj,down_proj,up_proj,gate_proj", use_nested_quant: "false", use_rslora: "false", use_dora: "false",
  bnb_4bit_compute_dtype: "float16", bnb_4bit_quant_storage_dtype: "uint8", bnb_4bit_quant_type: "nf4",
  use_flash_attn: "false", use_peft_lora: "false", use_8bit_quantization: "false", use_4bit_quantization: "false",
  use_reentrant: "false", use_unsloth: "false", dataset_name: "timdettmers/openassistant-guanaco", packing: "false",
  packing_strategy: "bfd", dataset_text_field: "text", max_seq_length: "512", eos_token: "unset", pad_token: "unset", append_concat_token: "true",
  add_special_tokens: "false", splits: "train,test", assistant_only_loss: "false", chat_template_file: "unset", truncation_mode: "keep_start",
  drop_long_examples: "false", skip_bad_rows: "false", test_split_ratio: "0", completion_only_loss: "unset",
  output_dir: "trainer_output", overwrite_output_dir: "false", resume_from_checkpoint: "unset", seed: "42",
  num_train_epochs: "3", max_steps: "-1", per_device_train_batch_size: "8", per_device_eval_batch_size: "8",
  gradient_accumulation_steps: "1", learning_rate: "0.00005", lr_scheduler_type: "linear", warmup_ratio: "0",
  warmup_steps: "0", weight_decay: "0", adam_beta1: "0.9", adam_beta2: "0.999", adam_epsilon: "1e-8",
  max_grad_norm: "1", optim: "adamw_torch", bf16: "false", fp16: "false", group_by_length: "false", train_sampling_strategy: "random", data_seed: "unset", dataloader_drop_last: "false", nan_inf_policy: "stop",
  gradient_checkpointing: "false", logging_strategy: "steps", logging_first_step: "false", logging_steps: "500", log_level: "passive", eval_strategy: "no", eval_steps: "unset",
  save_strategy: "steps", save_steps: "500", save_total_limit: "unset", ddp_timeout: "60", ddp_bucket_cap_mb: "unset", neftune_noise_alpha: "unset", report_to: "none",
  run_name: "unset", push_to_hub: "false", hub_model_id: "unset", hub_private_repo: "false", hub_strategy: "every_save", config_file: "unset", device: "auto", config: "unset", print_config: "false",
  beta: "0.1", loss_type: "sigmoid", loss_weights: "unset", label_smoothing: "0", max_prompt_length: "unset", max_completion_length: "unset",
  precompute_ref_log_probs: "false", reference_free: "false", rpo_alpha: "unset", ld_alpha: "unset", f_divergence_type: "reverse_kl", f_alpha_divergence_coef: "0.5", disable_dropout: "true", discopop_tau: "0.05",
};

function helpLine(help: string, name: string): string {
  const line = help.split("\n").find((l) => l.startsWith(`  --${name} `) || l.startsWith(`  --${name}, `));
  assert.ok(line !== undefined, `no help line for --${name}`);
  return line;
}

void test("help lists every schema field once, with its type and default", () => {
  const help = renderTrainHelp();
  const expectedNames = [...Object.keys(EXPECTED_HELP_DEFAULTS), "model_name_or_path"];
  assert.deepEqual(expectedNames.sort(), [...FIELD_NAMES].sort(), "the expected table covers the schema");
  for (const [name, expected] of Object.entries(EXPECTED_HELP_DEFAULTS)) {
    const line = helpLine(help, name);
    assert.ok(line.includes(`(default: ${expected})`), `--${name}: ${line}`);
    assert.ok(line.includes(TRAIN_FIELDS[name as keyof typeof TRAIN_FIELDS].type), line);
  }
  assert.ok(helpLine(help, "model_name_or_path").includes("(required)"));
  assert.ok(helpLine(help, "max_seq_length").startsWith("  --max_seq_length, --max_length int >= 1"));
  assert.ok(helpLine(help, "eval_strategy").startsWith("  --eval_strategy, --evaluation_strategy no|steps|epoch"));
  assert.ok(helpLine(help, "lr_scheduler_type").includes("linear|cosine|cosine_with_restarts|polynomial|constant|constant_with_warmup"));
});

void test("help is grouped model, data, training, tuna, each doc line under its flag, then the notes", () => {
  const help = renderTrainHelp();
  const positions = ["model arguments:", "data arguments:", "training arguments:", "DPO arguments (tuna dpo; TRL's DPOConfig names):", "tuna options:", "notes:"].map((h) => help.indexOf(`\n${h}\n`));
  assert.ok(positions.every((p) => p > 0), String(positions));
  assert.deepEqual([...positions].sort((a, b) => a - b), positions);
  const flagAt = (name: string): number => help.indexOf(`\n  --${name} `);
  assert.ok(flagAt("lora_r") > positions[0]! && flagAt("lora_r") < positions[1]!);
  assert.ok(flagAt("packing") > positions[1]! && flagAt("packing") < positions[2]!);
  assert.ok(flagAt("beta") > positions[3]! && flagAt("beta") < positions[4]!);
  assert.ok(flagAt("print_config") > positions[4]!);
  const lines = help.split("\n");
  const at = lines.findIndex((l) => l.startsWith("  --lora_r "));
  assert.equal(lines[at + 1], "      LoRA rank.");
  // The optimizer mapping is recorded in the help.
  assert.match(help, /paged_adamw_8bit\s+-> AdamW with fp32 moments/);
  assert.match(help, /adamw_torch_fused -> AdamW/);
});

void test("the resolved configuration marks non-default values and names their source", async () => {
  const resolved = await parseTrainArgs(
    ["--model_name_or_path", "/m", "--lora_r", "8", "--lora_alpha", "16", "--max_seq_len", "2048", "--eval_strategy", "steps",
      "--config_file", "deepspeed_config_z3_qlora.yaml", "--bf16"],
    { cwd: FIXTURES },
  );
  const text = formatResolvedConfig(resolved);
  assert.match(text, /^lora_r:\s+8\s+# \* flag --lora_r$/m);
  assert.match(text, /^lora_alpha:\s+16\s+# flag --lora_alpha$/m); // set, but equal to the default
  assert.match(text, /^lora_dropout:\s+0\.1$/m); // default: no comment
  assert.match(text, /^max_seq_length:\s+2048\s+# \* flag --max_seq_len$/m);
  assert.match(text, /^eval_steps:\s+500\s+# \* derived from logging_steps$/m);
  assert.match(text, /^# neftune_noise_alpha:\s+\(unset\)$/m);
  assert.match(text, /^lora_target_modules:\s+\[q_proj, k_proj, v_proj, o_proj, down_proj, up_proj, gate_proj\]$/m);
  assert.match(text, /^# accelerate config .*deepspeed_config_z3_qlora\.yaml: 2 processes on 1 machine, mixed_precision bf16, DeepSpeed ZeRO stage 3/m);
  assert.doesNotMatch(text, /^print_config:/m);
});

void test("the resolved configuration is YAML that parses back to the same configuration", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tuna-render-"));
  try {
    const original = await parseTrainArgs([
      "--model_name_or_path", "true", "--lora_target_modules", "all-linear", "--splits", "train_sft,test_sft",
      "--learning_rate", "1e-4", "--adam_epsilon", "1e-10", "--output_dir", "out: dir", "--report_to", "tensorboard,jsonl",
      "--completion_only_loss", "False", "--neftune_noise_alpha", "5", "--dataset_text_field", "123",
    ]);
    await writeFile(join(dir, "resolved.yaml"), formatResolvedConfig(original));
    const reread = await parseTrainArgs(["resolved.yaml"], { cwd: dir });
    assert.deepEqual({ ...reread.config, config: undefined }, { ...original.config, config: undefined });
    assert.equal(reread.config.model_name_or_path, "true");
    assert.equal(reread.config.dataset_text_field, "123");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

void test("docs/flags.md is the generated page; no Python-stack name is both a field and ignored/refused; help lists them", async () => {
  const { readFile } = await import("node:fs/promises");
  const { renderFlagsPage } = await import("../../src/config/render.ts");
  const { PYTHON_NAMES } = await import("../../src/config/python-names.ts");
  const { NAME_TO_FIELD } = await import("../../src/config/schema.ts");
  const page = await readFile(new URL("../../docs/flags.md", import.meta.url), "utf8");
  assert.equal(page, renderFlagsPage(), "docs/flags.md is stale: run npx tsx tools/docs/write-flags.ts");
  for (const name of Object.keys(PYTHON_NAMES)) assert.equal(NAME_TO_FIELD.has(name), false, `${name} is a field and in python-names.ts`);
  const help = renderTrainHelp();
  assert.match(help, /options accepted and ignored[\s\S]*--dataloader_num_workers +tuna's batches come from memory/);
  assert.match(help, /options refused[\s\S]*--loftq_config +LoftQ is not implemented/);
});
