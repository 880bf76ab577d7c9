// RMSNorm for the CPU backend, in HF LlamaRMSNorm's order: rstd = 1/sqrt(mean(x^2) + eps) in float32,
// n = float32(x * rstd) cast to x's dtype, THEN out = n * weight. Sums run in float64.
import type { DType, RmsnormOptions, Tensor } from "../types.ts";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "../../util/half.ts";
import { checkRmsnormBackward, checkRmsnormForward } from "../op-checks.ts";
import { expectSeparate, f32Data, outputFloats, readFloats, writeFloats, type Slot, type TensorStore } from "./store.ts";

/** The cast HF applies before the weight multiply: float32 -> x's dtype -> float32 (value-wise). */
function castTo(dtype: DType): (v: number) => number {
  if (dtype === "bf16") return (v) => bf16BitsToF32(f32ToBf16Bits(v));
  if (dtype === "f16") return (v) => f16BitsToF32(f32ToF16Bits(v));
  return Math.fround;
}

/**
 * The factor a row's element is multiplied by and the normalized value it multiplies: Llama's cast(x * rstd) and w,
 * or (plusOne, Gemma's) float32(x * rstd) and float32(1 + w).
 */
function normTerms(dtype: DType, plusOne: boolean): { n: (v: number) => number; w: (v: number) => number } {
  return plusOne ? { n: Math.fround, w: (v) => Math.fround(1 + v) } : { n: castTo(dtype), w: (v) => v };
}

/** out (..., C) = cast(x * rstd) * weight (plusOne: x * rstd * (1 + weight)); rstd f32 (...) saved for the backward. */
export function rmsnormForward(store: TensorStore, out: Tensor, rstd: Tensor, x: Tensor, weight: Tensor, eps: number, options: RmsnormOptions = {}): void {
  const op = "rmsnormForward";
  const { rows, cols } = checkRmsnormForward(out, rstd, x, weight, eps);
  const outSlot = store.get(op, "out", out);
  const rstdSlot = store.get(op, "rstd", rstd);
  const xSlot = store.get(op, "x", x);
  const weightSlot = store.get(op, "weight", weight);
  expectSeparate(op, [["out", outSlot], ["rstd", rstdSlot]], [["x", xSlot], ["weight", weightSlot]]);
  const xv = readFloats(xSlot);
  const w = readFloats(weightSlot);
  const r = f32Data(op, "rstd", rstdSlot);
  const o = outputFloats(outSlot, false);
  const terms = normTerms(x.dtype, options.plusOne === true);
  const eps32 = Math.fround(eps);
  for (let row = 0; row < rows; row++) {
    const base = row * cols;
    let sumSquares = 0;
    for (let j = 0; j < cols; j++) sumSquares += xv[base + j]! * xv[base + j]!;
    const rs = Math.fround(1 / Math.sqrt(sumSquares / cols + eps32));
    r[row] = rs;
    for (let j = 0; j < cols; j++) o[base + j] = terms.n(xv[base + j]! * rs) * terms.w(w[j]!);
  }
  writeFloats(outSlot, o);
}

/**
 * dx = rstd * (g - n * mean(g * n)) with g = dout * weight and n = x * rstd (overwritten, or added when
 * accumulate); dweight += sum over rows of dout * cast(n), the factor the forward multiplied by.
 */
export function rmsnormBackward(
  store: TensorStore,
  dx: Tensor,
  dweight: Tensor | null,
  dout: Tensor,
  x: Tensor,
  weight: Tensor,
  rstd: Tensor,
  accumulate: boolean,
  options: RmsnormOptions = {},
): void {
  const op = "rmsnormBackward";
  const { rows, cols } = checkRmsnormBackward(dx, dweight, dout, x, weight, rstd);
  const dxSlot = store.get(op, "dx", dx);
  const doutSlot = store.get(op, "dout", dout);
  const xSlot = store.get(op, "x", x);
  const weightSlot = store.get(op, "weight", weight);
  const rstdSlot = store.get(op, "rstd", rstd);
  const dweightSlot: Slot | null = dweight === null ? null : store.get(op, "dweight", dweight);
  const outputs = dweightSlot === null ? [["dx", dxSlot] as const] : [["dx", dxSlot] as const, ["dweight", dweightSlot] as const];
  expectSeparate(op, outputs, [["dout", doutSlot], ["x", xSlot], ["weight", weightSlot], ["rstd", rstdSlot]]);
  const d = readFloats(doutSlot);
  const xv = readFloats(xSlot);
  const w = readFloats(weightSlot);
  const r = f32Data(op, "rstd", rstdSlot);
  const o = outputFloats(dxSlot, accumulate);
  const terms = normTerms(x.dtype, options.plusOne === true);
  const dw = new Float64Array(dweightSlot === null ? 0 : cols);
  for (let row = 0; row < rows; row++) {
    const base = row * cols;
    const rs = r[row]!;
    let dot = 0;
    for (let j = 0; j < cols; j++) dot += d[base + j]! * terms.w(w[j]!) * xv[base + j]! * rs;
    const meanDot = dot / cols;
    for (let j = 0; j < cols; j++) {
      const v = rs * (d[base + j]! * terms.w(w[j]!) - xv[base + j]! * rs * meanDot);
      o[base + j] = accumulate ? o[base + j]! + v : v;
    }
    if (dweightSlot !== null) for (let j = 0; j < cols; j++) dw[j] = dw[j]! + d[base + j]! * terms.n(xv[base + j]! * rs);
  }
  writeFloats(dxSlot, o);
  if (dweightSlot !== null) {
    const dwv = outputFloats(dweightSlot, true);
    for (let j = 0; j < cols; j++) dwv[j] = dwv[j]! + dw[j]!;
    writeFloats(dweightSlot, dwv);
  }
}
