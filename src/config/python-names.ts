// Names of the Python stack's arguments (transformers' TrainingArguments, TRL's SFTConfig, peft's examples/sft
// ModelArguments / DataTrainingArguments, peft's LoraConfig) that are not tuna fields, and what tuna does with
// each: `ignored` (accepted with a one-line notice: it has no meaning here, or tuna already behaves that way)
// or `refused` (an error saying why and what to use instead). Every field tuna implements is in schema.ts; the
// three kinds together are the table of `tuna train --help` and docs/flags.md.

export type PythonName =
  | { kind: "ignored"; takes: "bool" | "value"; why: string }
  | { kind: "refused"; takes: "bool" | "value"; why: string };

const ignored = (takes: "bool" | "value", why: string): PythonName => ({ kind: "ignored", takes, why });
const refused = (takes: "bool" | "value", why: string): PythonName => ({ kind: "refused", takes, why });

const DATALOADER = "tuna's batches come from memory, prepared and cached before training; there are no loader workers";
const NOT_TORCH = "tuna is not PyTorch";

export const PYTHON_NAMES: Readonly<Record<string, PythonName>> = {
  // ---- TrainingArguments: what the script runs
  do_train: ignored("bool", "tuna train always trains"),
  do_eval: ignored("bool", "evaluation follows eval_strategy (and a test split), as Trainer does"),
  do_predict: refused("bool", "prediction is not part of tuna train; use tuna eval or tuna generate"),
  prediction_loss_only: ignored("bool", "tuna's evaluation reports the loss only"),
  eval_accumulation_steps: ignored("value", "evaluation sums losses on the device; nothing is accumulated on the host"),
  eval_delay: refused("value", "not implemented; start evaluating later with eval_steps"),
  torch_empty_cache_steps: ignored("value", `${NOT_TORCH}: the caching allocator keeps its blocks`),
  lr_scheduler_kwargs: refused("value", "scheduler options are not implemented; tuna's schedules take none beyond warmup"),
  log_level_replica: ignored("value", "ranks other than 0 print nothing but their errors"),
  log_on_each_node: ignored("bool", "rank 0 logs for the whole job"),
  logging_dir: refused("value", "TensorBoard writes under output_dir/runs/ (HF's default); move that folder after the run"),
  logging_nan_inf_filter: ignored("bool", "non-finite steps follow nan_inf_policy"),
  save_safetensors: ignored("bool", "tuna saves safetensors only"),
  save_on_each_node: ignored("bool", "rank 0 saves for the whole job"),
  save_only_model: refused("bool", "checkpoints always hold the optimizer and trainer state for an exact resume"),
  restore_callback_states_from_checkpoint: ignored("bool", "tuna has no callbacks"),
  use_cpu: refused("bool", "use --device cpu"),
  jit_mode_eval: ignored("bool", NOT_TORCH),
  fp16_opt_level: ignored("value", "apex is not used"),
  half_precision_backend: ignored("value", "tuna has one mixed-precision path"),
  bf16_full_eval: ignored("bool", "evaluation runs as training does"),
  fp16_full_eval: ignored("bool", "evaluation runs as training does"),
  tf32: ignored("bool", "tuna's GEMMs run in bf16 with float32 accumulation; TF32 is not used"),
  local_rank: ignored("value", "the rank comes from the launcher's environment (LOCAL_RANK...)"),
  ddp_backend: ignored("value", "NCCL on GPUs, tuna's host transport otherwise (TUNA_COLLECTIVE chooses)"),
  tpu_num_cores: refused("value", "TPUs are not supported"),
  dataloader_num_workers: ignored("value", DATALOADER),
  dataloader_prefetch_factor: ignored("value", DATALOADER),
  dataloader_pin_memory: ignored("bool", DATALOADER),
  dataloader_persistent_workers: ignored("bool", DATALOADER),
  past_index: ignored("value", "not used by causal language models"),
  disable_tqdm: ignored("bool", "the progress display draws only on a terminal"),
  remove_unused_columns: ignored("bool", "tuna reads only the columns of the dataset's format"),
  label_names: ignored("value", "the labels come from the dataset format"),
  load_best_model_at_end: refused("bool", "not implemented; every checkpoint-N is kept (see save_total_limit): pick one with tuna eval"),
  metric_for_best_model: refused("value", "best-model selection is not implemented"),
  greater_is_better: refused("bool", "best-model selection is not implemented"),
  ignore_data_skip: refused("bool", "a resumed run always continues at the data position of its checkpoint (exact resume)"),
  fsdp: refused("value", "give FSDP through an accelerate config: --config_file fsdp.yaml (distributed_type: FSDP)"),
  fsdp_config: refused("value", "give FSDP through an accelerate config: --config_file fsdp.yaml"),
  deepspeed: refused("value", "give DeepSpeed through an accelerate config: --config_file ds.yaml (distributed_type: DEEPSPEED, zero_stage)"),
  accelerator_config: ignored("value", "accelerate's dataloader options have no meaning here"),
  label_smoothing_factor: refused("value", "label smoothing of the cross-entropy is not implemented"),
  debug: ignored("value", "use --log_level debug"),
  optim_args: refused("value", "optimizer options are not implemented; AdamW takes adam_beta1/2, adam_epsilon, weight_decay"),
  adafactor: refused("bool", "Adafactor is not implemented; tuna has AdamW"),
  length_column_name: ignored("value", "lengths are computed from the tokenized examples"),
  ddp_find_unused_parameters: ignored("bool", "every trainable parameter gets a gradient in every step"),
  ddp_broadcast_buffers: ignored("bool", "the model has no buffers to broadcast"),
  skip_memory_metrics: ignored("bool", "peak memory is always logged (peak_memory_gib)"),
  hub_token: refused("value", "a token does not belong on a command line or in a config file: set HF_TOKEN (or run huggingface-cli login)"),
  hub_always_push: ignored("bool", "each push completes before training goes on, so none is skipped"),
  gradient_checkpointing_kwargs: ignored("value", "tuna's checkpointing recomputes each decoder block, like use_reentrant false"),
  include_inputs_for_metrics: ignored("bool", "evaluation computes the loss only"),
  include_for_metrics: ignored("value", "evaluation computes the loss only"),
  eval_do_concat_batches: ignored("bool", "evaluation computes the loss only"),
  auto_find_batch_size: refused("bool", "not implemented; tuna plan predicts the memory of a batch size"),
  full_determinism: ignored("bool", "tuna's CPU runs are deterministic; GPU runs are repeatable for a given GPU"),
  torchdynamo: ignored("value", NOT_TORCH),
  ray_scope: ignored("value", "hyperparameter search is not part of tuna"),
  torch_compile: ignored("bool", `${NOT_TORCH}: its kernels are compiled by NVRTC`),
  torch_compile_backend: ignored("value", NOT_TORCH),
  torch_compile_mode: ignored("value", NOT_TORCH),
  include_tokens_per_second: ignored("bool", "tokens/s is always reported"),
  include_num_input_tokens_seen: ignored("bool", "tokens seen are always counted"),
  optim_target_modules: refused("value", "GaLore-style optimizers are not implemented"),
  batch_eval_metrics: ignored("bool", "evaluation computes the loss only"),
  eval_on_start: refused("bool", "not implemented; run tuna eval on the base model before training"),
  use_liger_kernel: ignored("bool", "tuna's logits are computed in chunks already (no full logits tensor)"),
  eval_use_gather_object: ignored("bool", "the ranks' evaluation sums are combined exactly"),
  average_tokens_across_devices: ignored("bool", "the loss is always normalised by the trained tokens of every rank"),
  // ---- TRL's DPOConfig (its other fields are tuna dpo's own, group dpo)
  use_weighting: refused("bool", "WPO weighting is not implemented"),
  sync_ref_model: refused("bool", "TR-DPO is not implemented: the reference is the starting model (the base with the adapters off)"),
  ref_model_mixup_alpha: refused("value", "TR-DPO is not implemented: the reference is the starting model"),
  ref_model_sync_steps: refused("value", "TR-DPO is not implemented: the reference is the starting model"),
  precompute_ref_batch_size: ignored("value", "the reference pass before training uses per_device_eval_batch_size"),
  model_adapter_name: refused("value", "tuna trains one adapter; the reference is the model with it switched off"),
  ref_adapter_name: refused("value", "tuna trains one adapter; the reference is the model with it switched off"),
  // ---- TRL's SFTConfig
  model_init_kwargs: refused("value", "tuna loads models itself; use the model and quantization flags"),
  chat_template_path: refused("value", "use --chat_template_file (a .jinja file)"),
  dataset_kwargs: ignored("value", "the dataset options tuna implements are flags of their own"),
  dataset_num_proc: ignored("value", "tokenization uses every core through worker threads"),
  eos_token: refused("value", "the tokenizer's eos_token is used"),
  pad_token: refused("value", "the tokenizer's pad token (else its eos) is used"),
  padding_free: ignored("bool", "tuna's batches are padding-free whenever packing is on, and never mix documents' attention"),
  pad_to_multiple_of: ignored("value", "packed batches are not padded"),
  eval_packing: refused("bool", "evaluation packs as training does"),
  activation_offloading: refused("bool", "activation offload is not implemented; use gradient_checkpointing"),
  // ---- peft examples/sft ModelArguments
  torch_dtype: ignored("value", "the weights load as stored; bf16 / fp16 choose the compute dtype"),
  attn_implementation: ignored("value", "tuna uses its own flash attention (the same results as sdpa or flash_attention_2)"),
  // ---- peft LoraConfig
  lora_bias: refused("bool", "LoRA biases are not implemented"),
  fan_in_fan_out: refused("bool", "only Linear layers (not GPT-2's Conv1D) are adapted"),
  init_lora_weights: refused("value", "tuna initializes as PEFT's default (Kaiming-uniform A, zero B)"),
  modules_to_save: refused("value", "training whole modules beside the adapter is not exposed"),
  layers_to_transform: refused("value", "not exposed as a flag"),
  loftq_config: refused("value", "LoftQ is not implemented"),
};
