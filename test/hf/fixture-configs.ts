// Real-world config.json contents (field values as published on the hub) shared by the model tests.

// Field values as published in the hub configs of these models.
export const llama2_7b = {
  architectures: ["LlamaForCausalLM"], bos_token_id: 1, eos_token_id: 2, hidden_act: "silu", hidden_size: 4096,
  initializer_range: 0.02, intermediate_size: 11008, max_position_embeddings: 4096, model_type: "llama",
  num_attention_heads: 32, num_hidden_layers: 32, num_key_value_heads: 32, pretraining_tp: 1, rms_norm_eps: 1e-5,
  rope_scaling: null, tie_word_embeddings: false, torch_dtype: "float16", use_cache: true, vocab_size: 32000,
};
export const llama31_8b = {
  ...llama2_7b, bos_token_id: 128000, eos_token_id: [128001, 128008, 128009], intermediate_size: 14336,
  max_position_embeddings: 131072, num_key_value_heads: 8, rope_theta: 500000.0, vocab_size: 128256, torch_dtype: "bfloat16",
  rope_scaling: { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192, rope_type: "llama3" },
};
export const mistral_7b_v01 = {
  architectures: ["MistralForCausalLM"], bos_token_id: 1, eos_token_id: 2, hidden_act: "silu", hidden_size: 4096,
  intermediate_size: 14336, max_position_embeddings: 32768, model_type: "mistral", num_attention_heads: 32,
  num_hidden_layers: 32, num_key_value_heads: 8, rms_norm_eps: 1e-5, rope_theta: 10000.0, sliding_window: 4096,
  tie_word_embeddings: false, torch_dtype: "bfloat16", vocab_size: 32000,
};
export const qwen2_05b = {
  architectures: ["Qwen2ForCausalLM"], bos_token_id: 151643, eos_token_id: 151643, hidden_act: "silu", hidden_size: 896,
  intermediate_size: 4864, max_position_embeddings: 131072, max_window_layers: 24, model_type: "qwen2",
  num_attention_heads: 14, num_hidden_layers: 24, num_key_value_heads: 2, rms_norm_eps: 1e-6, rope_theta: 1000000.0,
  sliding_window: 131072, tie_word_embeddings: true, torch_dtype: "bfloat16", use_sliding_window: false, vocab_size: 151936,
};
