// A GGUF file as a model tuna can open: the HF config its metadata implies and a WeightSource that serves
// the tensors under their HF names as float32 (dequantized, llama's q/k rows put back in HF's order), so
// generate, chat, serve, eval and training take a .gguf where they take a model folder.
import { TunaError } from "../util/errors.ts";
import { encodeFromFloat32 } from "../io/safetensors/convert.ts";
import type { WeightInfo, WeightSource } from "../io/safetensors/checkpoint.ts";
import { openGguf, metadataReader, type GgufFile } from "../io/gguf/reader.ts";
export { isGgufPath } from "../io/gguf/reader.ts";
import { decodeGgml } from "../io/gguf/quants.ts";
import { parseModelConfig, type ModelConfig } from "./config.ts";
import { expectedWeights } from "./weights.ts";
import { ggufTensorName, permuteRotaryRows, readValues, rotaryHeadsOf, type GgufArchName } from "./gguf-arch.ts";

const READABLE: Record<string, GgufArchName | undefined> = { llama: "llama", qwen2: "qwen2", qwen3: "qwen3", gemma2: "gemma2", gemma3: "gemma3", phi3: "phi3" };
/** The transformers model_type and class of each architecture read. */
const HF_NAMES: Record<GgufArchName, [string, string]> = {
  llama: ["llama", "LlamaForCausalLM"],
  qwen2: ["qwen2", "Qwen2ForCausalLM"],
  qwen3: ["qwen3", "Qwen3ForCausalLM"],
  gemma2: ["gemma2", "Gemma2ForCausalLM"],
  gemma3: ["gemma3_text", "Gemma3ForCausalLM"],
  phi3: ["phi3", "Phi3ForCausalLM"],
};

export interface GgufModel {
  file: GgufFile;
  arch: GgufArchName;
  config: ModelConfig;
  /** config.json as transformers would write it for this model. */
  configJson: Record<string, unknown>;
  weights: WeightSource;
}

/** The HF config.json fields the file's metadata and tensors imply. */
function configFromMetadata(file: GgufFile, arch: GgufArchName): Record<string, unknown> {
  const m = metadataReader(file);
  const k = (key: string): string => `${arch}.${key}`;
  const has = (name: string): boolean => file.tensors.some((t) => t.name === name);
  const embd = file.tensors.find((t) => t.name === "token_embd.weight");
  if (embd === undefined) throw new TunaError("MODEL_INVALID", `${file.path} has no token_embd.weight; it is not a decoder model tuna can read.`);
  const hidden = m.num(k("embedding_length"));
  const heads = m.num(k("attention.head_count"));
  const headDim = m.optNum(k("attention.key_length")) ?? hidden / heads;
  const scalingType = m.optStr(k("rope.scaling.type"));
  if (scalingType !== undefined && scalingType !== "none" && scalingType !== "linear") {
    throw new TunaError("UNSUPPORTED", `${file.path}: RoPE scaling "${scalingType}" is not one tuna reads from GGUF (none, linear).`);
  }
  const special = (name: string): number | undefined => m.optNum(`tokenizer.ggml.${name}_token_id`);
  const json: Record<string, unknown> = {
    architectures: [HF_NAMES[arch][1]],
    model_type: HF_NAMES[arch][0],
    vocab_size: embd.ne[1],
    hidden_size: hidden,
    intermediate_size: m.num(k("feed_forward_length")),
    num_hidden_layers: m.num(k("block_count")),
    num_attention_heads: heads,
    num_key_value_heads: m.optNum(k("attention.head_count_kv")) ?? heads,
    head_dim: headDim,
    max_position_embeddings: m.num(k("context_length")),
    rms_norm_eps: m.num(k("attention.layer_norm_rms_epsilon")),
    rope_theta: m.optNum(k("rope.freq_base")) ?? 10000,
    rope_scaling: scalingType === "linear" ? { rope_type: "linear", factor: m.num(k("rope.scaling.factor")) } : null,
    tie_word_embeddings: !has("output.weight"),
    torch_dtype: "float32",
    ...(special("bos") === undefined ? {} : { bos_token_id: special("bos") }),
    ...(special("eos") === undefined ? {} : { eos_token_id: special("eos") }),
    ...(special("padding") === undefined ? {} : { pad_token_id: special("padding") }),
  };
  if (arch === "llama") {
    json["attention_bias"] = has("blk.0.attn_q.bias");
    json["mlp_bias"] = has("blk.0.ffn_gate.bias");
  }
  const window = m.optNum(k("attention.sliding_window"));
  const pattern = m.array(k("attention.sliding_window_pattern"));
  if (window !== undefined && window > 0) {
    json["sliding_window"] = window;
    // Which layers slide: the per-layer flags tuna writes, else llama.cpp's period (every n-th layer global).
    const period = pattern === undefined ? (arch === "gemma2" ? 2 : arch === "gemma3" ? 6 : 1) : typeof pattern[0] === "boolean" ? 0 : Number(pattern[0]);
    const slides = (l: number): boolean => (pattern !== undefined && typeof pattern[0] === "boolean" ? pattern[l] === true : period > 0 && l % period < period - 1);
    if (arch !== "phi3") json["layer_types"] = Array.from({ length: json["num_hidden_layers"] as number }, (_, l) => (slides(l) ? "sliding_attention" : "full_attention"));
  }
  if (arch === "gemma2" || arch === "gemma3") {
    // llama.cpp's query scale for these shapes (gguf-arch.ts refuses to write others): 1/sqrt(head_dim), or
    // 1/sqrt(hidden / heads) for the 27B layer counts.
    const big = (json["num_hidden_layers"] as number) === (arch === "gemma2" ? 46 : 62);
    json["query_pre_attn_scalar"] = big ? hidden / heads : headDim;
    json["hidden_activation"] = "gelu_pytorch_tanh";
    const attnCap = m.optNum(k("attn_logit_softcapping"));
    const finalCap = m.optNum(k("final_logit_softcapping"));
    json["attn_logit_softcapping"] = attnCap ?? null;
    json["final_logit_softcapping"] = finalCap ?? null;
    const local = m.optNum(k("rope.freq_base_swa"));
    if (arch === "gemma3") json["rope_local_base_freq"] = local ?? 10000;
  }
  return json;
}

/** Opens `path` as a model; MODEL_UNSUPPORTED for architectures tuna does not read, naming the ones it does. */
export async function openGgufModel(path: string): Promise<GgufModel> {
  const file = await openGguf(path);
  try {
    const archName = metadataReader(file).str("general.architecture");
    const arch = READABLE[archName];
    if (arch === undefined) {
      throw new TunaError("MODEL_UNSUPPORTED", `${path} holds a "${archName}" model; tuna reads GGUF files of the ${Object.keys(READABLE).join(", ")} architectures.`);
    }
    const configJson = configFromMetadata(file, arch);
    let config = parseModelConfig(configJson, path);
    // Llama 3.x scaling arrives as its per-frequency divisors (rope_freqs.weight), which RoPE applies as given.
    const factors = file.tensors.find((t) => t.name === "rope_freqs.weight");
    if (factors !== undefined) {
      if (factors.ne.length !== 1 || factors.ne[0] !== config.headDim / 2) throw new TunaError("MODEL_INVALID", `${path}: rope_freqs.weight has shape [${factors.ne.join(", ")}], not [${config.headDim / 2}].`);
      config = { ...config, ropeScaling: { type: "factors", factors: [...decodeGgml(await file.readTensor(factors.name), factors.ne[0], factors.type)] } };
    }
    const byGguf = new Map(file.tensors.map((t) => [t.name, t]));
    const hfNames = new Map<string, string>(); // HF name -> GGUF name, for the tensors the file has
    for (const w of expectedWeights(config)) {
      const g = ggufTensorName(w.name, arch);
      if (byGguf.has(g)) hfNames.set(w.name, g);
    }
    const infoOf = (name: string): WeightInfo => {
      const t = byGguf.get(hfNames.get(name) ?? "");
      if (t === undefined) throw new TunaError("MODEL_INVALID", `${path} has no tensor for ${name}.`);
      const shape = [...t.ne].reverse();
      const count = shape.reduce((a, b) => a * b, 1);
      return { name, dtype: "F32", shape, byteOffset: file.dataStart + t.offset, byteLength: count * 4, file: path };
    };
    const read = async (name: string): Promise<Uint8Array> => {
      const info = infoOf(name);
      const t = byGguf.get(hfNames.get(name)!)!;
      let values = readValues(arch, name, decodeGgml(await file.readTensor(t.name), info.byteLength / 4, t.type));
      const heads = rotaryHeadsOf(arch, config, name);
      if (heads !== null) values = permuteRotaryRows(values, heads, info.shape.length === 2 ? info.shape[1]! : 1, "to-hf");
      if (values.some((v) => !Number.isFinite(v))) throw new TunaError("MODEL_INVALID", `${path}: tensor ${t.name} holds NaN or infinite values.`);
      return encodeFromFloat32(values, "F32");
    };
    const weights: WeightSource = {
      dir: path,
      files: [path],
      names: () => [...hfNames.keys()].sort(),
      info: infoOf,
      has: (name) => hfNames.has(name),
      readTensor: read,
      async readTensorRange(name, first, end) {
        return (await read(name)).slice(first * 4, end * 4);
      },
      close: () => file.close(),
    };
    return { file, arch, config, configJson, weights };
  } catch (e) {
    await file.close();
    throw e;
  }
}
