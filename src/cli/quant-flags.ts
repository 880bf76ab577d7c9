// The quantization flags that eval, generate and chat share, and what they ask the model loader for.
import type { LoadOptions } from "../model/causal-lm/load.ts";

export interface QuantFlags {
  use_4bit_quantization?: boolean;
  bnb_4bit_quant_type?: string;
  use_nested_quant?: boolean;
  use_8bit_quantization?: boolean;
}

export function quantizeFromFlags(values: QuantFlags): LoadOptions["quantize"] {
  if (values.use_4bit_quantization === true) {
    return { kind: "4bit", quantType: values.bnb_4bit_quant_type === "fp4" ? "fp4" : "nf4", doubleQuant: values.use_nested_quant === true };
  }
  return values.use_8bit_quantization === true ? { kind: "8bit" } : null;
}
