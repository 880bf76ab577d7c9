// llama.cpp itself, as the independent judge of tuna's GGUF files: the prebuilt CPU libraries of the npm
// package @node-llama-cpp/linux-x64 (llama.cpp release pinned by its version), called through koffi with the
// structs of that release's include/llama.h. Loads a GGUF, tokenizes, runs a forward pass for logits, and
// quantizes with llama.cpp's own quantizer. A test helper only; tuna does not depend on llama.cpp.
import koffi from "koffi";
import type { LibraryHandle } from "koffi";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { existsSync } from "node:fs";

const require = createRequire(import.meta.url);

/** The folder of the prebuilt libraries, or null where the package is not installed (not linux-x64). */
export function llamaCppDir(): string | null {
  try {
    const dir = join(dirname(require.resolve("@node-llama-cpp/linux-x64")), "..", "bins", "linux-x64");
    return existsSync(join(dir, "libllama.v0.5.0.so")) ? dir : null;
  } catch {
    return null;
  }
}

// include/llama.h of the release the package ships (llama.cpp "v0.5.0" in node-llama-cpp 3.22.1).
koffi.struct("tuna_llama_model_params", {
  devices: "void *",
  tensor_buft_overrides: "void *",
  n_gpu_layers: "int32_t",
  split_mode: "int",
  load_mode: "int",
  lazy_mode: "int",
  main_gpu: "int32_t",
  tensor_split: "void *",
  progress_callback: "void *",
  progress_callback_user_data: "void *",
  kv_overrides: "void *",
  vocab_only: "bool",
  check_tensors: "bool",
  use_extra_bufts: "bool",
  no_host: "bool",
  no_alloc: "bool",
  load_mtp: "bool",
});
koffi.struct("tuna_llama_context_params", {
  n_ctx: "uint32_t",
  n_batch: "uint32_t",
  n_ubatch: "uint32_t",
  n_seq_max: "uint32_t",
  n_rs_seq: "uint32_t",
  n_outputs_max: "uint32_t",
  n_outputs_max_per_seq: "uint32_t",
  n_threads: "int32_t",
  n_threads_batch: "int32_t",
  ctx_type: "int",
  rope_scaling_type: "int",
  pooling_type: "int",
  attention_type: "int",
  flash_attn_type: "int",
  rope_freq_base: "float",
  rope_freq_scale: "float",
  yarn_ext_factor: "float",
  yarn_attn_factor: "float",
  yarn_beta_fast: "float",
  yarn_beta_slow: "float",
  yarn_orig_ctx: "uint32_t",
  defrag_thold: "float",
  cb_eval: "void *",
  cb_eval_user_data: "void *",
  type_k: "int",
  type_v: "int",
  abort_callback: "void *",
  abort_callback_data: "void *",
  embeddings: "bool",
  offload_kqv: "bool",
  no_perf: "bool",
  op_offload: "bool",
  swa_full: "bool",
  kv_unified: "bool",
  samplers: "void *",
  n_samplers: "size_t",
  ctx_other: "void *",
});
koffi.struct("tuna_llama_batch", {
  n_tokens: "int32_t",
  token: "void *",
  embd: "void *",
  pos: "void *",
  n_seq_id: "void *",
  seq_id: "void *",
  logits: "void *",
});
koffi.struct("tuna_llama_model_quantize_params", {
  nthread: "int32_t",
  ftype: "int",
  output_tensor_type: "int",
  token_embedding_type: "int",
  allow_requantize: "bool",
  quantize_output_tensor: "bool",
  only_copy: "bool",
  pure: "bool",
  keep_split: "bool",
  dry_run: "bool",
  imatrix: "void *",
  kv_overrides: "void *",
  tt_overrides: "void *",
  prune_layers: "void *",
  max_buf_size: "size_t",
});
const LogCallback = koffi.proto("void tuna_ggml_log_callback(int level, const char *text, void *user)");

interface Api {
  modelDefaults: () => Record<string, unknown>;
  contextDefaults: () => Record<string, unknown>;
  quantizeDefaults: () => Record<string, unknown>;
  load: (path: string, params: Record<string, unknown>) => unknown;
  freeModel: (m: unknown) => void;
  vocab: (m: unknown) => unknown;
  nTokens: (v: unknown) => number;
  tokenize: (v: unknown, text: Buffer, len: number, out: Int32Array, max: number, addSpecial: boolean, parseSpecial: boolean) => number;
  initContext: (m: unknown, params: Record<string, unknown>) => unknown;
  freeContext: (c: unknown) => void;
  decode: (c: unknown, batch: Record<string, unknown>) => number;
  logitsIth: (c: unknown, i: number) => unknown;
  quantize: (inp: string, out: string, params: Record<string, unknown>) => number;
  loraInit: (m: unknown, path: string) => unknown;
  setLoras: (c: unknown, adapters: unknown[], n: number, scales: Float32Array) => number;
}

let api: Api | null = null;
const logLines: string[] = [];

function bind(): Api {
  if (api !== null) return api;
  const dir = llamaCppDir();
  if (dir === null) throw new Error("@node-llama-cpp/linux-x64 is not installed");
  const ggml = koffi.load(join(dir, "libggml.v0.5.0.so"));
  const lib = koffi.load(join(dir, "libllama.v0.5.0.so"));
  // Keep llama.cpp's log lines (shown when a call fails) off the test output.
  const logSet = lib.func("void llama_log_set(tuna_ggml_log_callback *cb, void *user)");
  const cb = koffi.register((_level: number, text: string) => {
    logLines.push(text);
    if (logLines.length > 400) logLines.splice(0, 200);
  }, koffi.pointer(LogCallback));
  logSet(cb, null);
  ggml.func("void ggml_backend_load_all_from_path(const char *dir)")(dir);
  lib.func("void llama_backend_init(void)")();
  api = {
    modelDefaults: lib.func("tuna_llama_model_params llama_model_default_params(void)"),
    contextDefaults: lib.func("tuna_llama_context_params llama_context_default_params(void)"),
    quantizeDefaults: lib.func("tuna_llama_model_quantize_params llama_model_quantize_default_params(void)"),
    load: lib.func("void *llama_model_load_from_file(const char *path, tuna_llama_model_params params)"),
    freeModel: lib.func("void llama_model_free(void *model)"),
    vocab: lib.func("void *llama_model_get_vocab(void *model)"),
    nTokens: lib.func("int32_t llama_vocab_n_tokens(void *vocab)"),
    tokenize: lib.func("int32_t llama_tokenize(void *vocab, const char *text, int32_t len, _Out_ int32_t *tokens, int32_t max, bool add_special, bool parse_special)"),
    initContext: lib.func("void *llama_init_from_model(void *model, tuna_llama_context_params params)"),
    freeContext: lib.func("void llama_free(void *ctx)"),
    decode: lib.func("int32_t llama_decode(void *ctx, tuna_llama_batch batch)"),
    logitsIth: lib.func("float *llama_get_logits_ith(void *ctx, int32_t i)"),
    quantize: lib.func("uint32_t llama_model_quantize(const char *inp, const char *out, tuna_llama_model_quantize_params *params)"),
    loraInit: lib.func("void *llama_adapter_lora_init(void *model, const char *path)"),
    setLoras: lib.func("int32_t llama_set_adapters_lora(void *ctx, void **adapters, size_t n, float *scales)"),
  };
  return api;
}

function failure(what: string): Error {
  return new Error(`llama.cpp: ${what}\n${logLines.slice(-20).join("")}`);
}

export interface LlamaCppModel {
  tokenize(text: string, options?: { addSpecial?: boolean; parseSpecial?: boolean }): number[];
  /** Logits of every position of one sequence, each a Float32Array of the vocabulary; `lora`: a GGUF LoRA adapter applied at scale 1. */
  logits(tokens: number[], lora?: string): Float32Array[];
  free(): void;
}

export function loadLlamaCpp(path: string): LlamaCppModel {
  const a = bind();
  const params: Record<string, unknown> = { ...a.modelDefaults(), n_gpu_layers: 0 };
  const model = a.load(path, params);
  if (model === null) throw failure(`could not load ${path}`);
  const vocab = a.vocab(model);
  const nVocab = a.nTokens(vocab);
  return {
    tokenize(text, options = {}) {
      const bytes = Buffer.from(text, "utf8");
      const out = new Int32Array(bytes.length + 16);
      const n = a.tokenize(vocab, bytes, bytes.length, out, out.length, options.addSpecial ?? false, options.parseSpecial ?? true);
      if (n < 0) throw failure(`tokenize needs ${-n} tokens`);
      return [...out.subarray(0, n)];
    },
    logits(tokens, lora) {
      const ctxParams: Record<string, unknown> = { ...a.contextDefaults(), n_ctx: Math.max(64, tokens.length), n_batch: Math.max(64, tokens.length), n_ubatch: Math.max(64, tokens.length), n_threads: 2, n_threads_batch: 2, no_perf: true, type_k: 0, type_v: 0, flash_attn_type: 0 }; // f32 KV cache, plain attention
      const ctx = a.initContext(model, ctxParams);
      if (ctx === null) throw failure("could not create a context");
      try {
        if (lora !== undefined) {
          const adapter = a.loraInit(model, lora);
          if (adapter === null) throw failure(`could not load the LoRA adapter ${lora}`);
          if (a.setLoras(ctx, [adapter], 1, Float32Array.of(1)) !== 0) throw failure("llama_set_adapters_lora failed");
        }
        // A batch of one sequence (positions and sequence id left to llama.cpp) asking for every position's logits.
        const tokenMem: unknown = koffi.alloc("int32_t", tokens.length);
        const flagMem: unknown = koffi.alloc("int8_t", tokens.length);
        koffi.encode(tokenMem, "int32_t", tokens, tokens.length);
        koffi.encode(flagMem, "int8_t", new Array<number>(tokens.length).fill(1), tokens.length);
        const batch = { n_tokens: tokens.length, token: tokenMem, embd: null, pos: null, n_seq_id: null, seq_id: null, logits: flagMem };
        const status = a.decode(ctx, batch);
        koffi.free(tokenMem);
        koffi.free(flagMem);
        if (status !== 0) throw failure(`llama_decode returned ${status}`);
        const rows: Float32Array[] = [];
        for (let i = 0; i < tokens.length; i++) {
          const ptr = a.logitsIth(ctx, i);
          if (ptr === null) throw failure(`no logits for position ${i}`);
          rows.push(Float32Array.from(koffi.decode(ptr, "float", nVocab) as number[]));
        }
        return rows;
      } finally {
        a.freeContext(ctx);
      }
    },
    free: () => {
      a.freeModel(model);
    },
  };
}

let ggmlBase: LibraryHandle | null = null;
function base(): LibraryHandle {
  bind();
  ggmlBase ??= koffi.load(join(llamaCppDir()!, "libggml-base.so"));
  return ggmlBase;
}

const GGML_TYPE_CODES: Record<string, number> = { Q8_0: 8, Q5_0: 6, Q4_K: 12, Q5_K: 13, Q6_K: 14 };

/** ggml's own ggml_quantize_chunk (no importance matrix): rows of `rowLength` values in `type`. */
export function ggmlQuantize(type: string, values: Float32Array, rowLength: number, bytes: number): Uint8Array {
  const fn = base().func("size_t ggml_quantize_chunk(int type, const float *src, _Out_ uint8_t *dst, int64_t start, int64_t nrows, int64_t n_per_row, const float *imatrix)");
  const out = new Uint8Array(bytes);
  const written = fn(GGML_TYPE_CODES[type]!, values, out, 0, values.length / rowLength, rowLength, null) as number;
  if (written !== bytes) throw new Error(`ggml_quantize_chunk wrote ${written} bytes, expected ${bytes}`);
  return out;
}

/** ggml's dequantize_row_<type> over `count` values. */
export function ggmlDequantize(type: string, bytes: Uint8Array, count: number): Float32Array {
  const fn = base().func(`void dequantize_row_${type.toLowerCase().replace("_k", "_K")}(const uint8_t *x, _Out_ float *y, int64_t k)`);
  const out = new Float32Array(count);
  fn(bytes, out, count);
  return out;
}

/** llama.cpp's quantizer (what `llama-quantize IN OUT TYPE` runs), single-threaded, no importance matrix. */
export function quantizeWithLlamaCpp(input: string, output: string, ftype: number): void {
  const a = bind();
  const params: Record<string, unknown> = { ...a.quantizeDefaults(), ftype, nthread: 1 };
  const status = a.quantize(input, output, params);
  if (status !== 0) throw failure(`llama_model_quantize returned ${status}`);
}
