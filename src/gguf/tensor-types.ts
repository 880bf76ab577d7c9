// Which ggml type each tensor of an export gets: for f32/f16/bf16/q8_0 as llama.cpp's converter chooses
// (1-D tensors and norms stay F32; Q8_0 needs rows of 32), for q4_k_m as llama.cpp's quantizer chooses
// (llama-quant.cpp's llama_tensor_get_type for LLAMA_FTYPE_MOSTLY_Q4_K_M on a dense model, with its
// fallbacks for rows that are not whole blocks), so the file equals `llama-quantize <f32.gguf> Q4_K_M`.
import { blockOf, type GgmlTypeName } from "../io/gguf/format.ts";

export const GGUF_OUT_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_k_m"] as const;
export type GgufOutType = (typeof GGUF_OUT_TYPES)[number];

/** general.file_type (llama_ftype) of each output type. */
export const FILE_TYPES: Record<GgufOutType, number> = { f32: 0, f16: 1, bf16: 32, q8_0: 7, q4_k_m: 15 };

export interface TypedTensor {
  name: string;
  ne: number[];
}

/**
 * The type llama.cpp's converter gives a matrix with rows of `rowLength` for a one-type output (f32, f16, bf16,
 * q8_0): Q8_0 falls back to F16 where its 32-value blocks do not fit the rows (gguf-py's QuantError).
 */
export function converterType(outType: Exclude<GgufOutType, "q4_k_m">, rowLength: number): GgmlTypeName {
  const base: GgmlTypeName = outType === "f32" ? "F32" : outType === "f16" ? "F16" : outType === "bf16" ? "BF16" : "Q8_0";
  return base === "Q8_0" && rowLength % 32 !== 0 ? "F16" : base;
}

/** tensor_type_fallback: a type whose blocks do not fit the row length becomes one whose blocks do, else F16. */
function fallback(type: GgmlTypeName, ncols: number): GgmlTypeName {
  if (ncols % blockOf(type).elements === 0) return type;
  const next: Partial<Record<GgmlTypeName, GgmlTypeName>> = { Q4_K: "Q5_0", Q5_K: "Q5_1", Q6_K: "Q8_0" };
  const t = next[type] ?? type;
  return ncols % blockOf(t).elements === 0 ? t : "F16";
}

/** llama.cpp quantizes 2-D tensors whose names end in "weight", except norms. */
function quantizable(t: TypedTensor): boolean {
  return t.ne.length >= 2 && t.name.endsWith("weight") && !t.name.includes("_norm.weight");
}

/** use_more_bits of llama-quant.cpp: the first and last eighth of the layers, and every third between. */
function useMoreBits(i: number, n: number): boolean {
  return i < Math.trunc(n / 8) || i >= Math.trunc((7 * n) / 8) || (i - Math.trunc(n / 8)) % 3 === 2;
}

/**
 * The type of every tensor, in file order. `is70b` is llama.cpp's LLM_TYPE_70B (80 layers with grouped
 * KV heads), for which attn_v gets Q5_K instead of Q4_K.
 */
export function tensorTypes(outType: GgufOutType, tensors: readonly TypedTensor[], options: { numLayers: number; is70b: boolean }): GgmlTypeName[] {
  if (outType !== "q4_k_m") {
    return tensors.map((t) => (t.ne.length <= 1 || t.name.endsWith("_norm.weight") ? "F32" : converterType(outType, t.ne[0]!)));
  }
  const tied = !tensors.some((t) => t.name === "output.weight");
  const nAttnV = tensors.filter((t) => t.name.includes("attn_v.weight")).length;
  let iAttnV = 0;
  let iFfnDown = 0;
  return tensors.map((t) => {
    if (!quantizable(t)) return "F32";
    let type: GgmlTypeName = "Q4_K";
    const ncols = t.ne[0]!;
    if (t.name === "output.weight" || (tied && t.name === "token_embd.weight")) {
      type = ncols % 256 !== 0 ? "Q8_0" : "Q6_K";
    } else if (t.name.includes("attn_v.weight")) {
      if (useMoreBits(iAttnV, nAttnV)) type = "Q6_K";
      else if (options.is70b) type = "Q5_K";
      iAttnV++;
    } else if (t.name.includes("ffn_down")) {
      if (useMoreBits(iFfnDown, options.numLayers)) type = "Q6_K";
      iFfnDown++;
    }
    return fallback(type, ncols);
  });
}
