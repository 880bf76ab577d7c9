// Elementwise CPU ops: add, scale, dropout, SwiGLU and the bias pair. Each output element is computed in
// float64 from float32 inputs (scalars rounded to float32 first) and rounded once; outputs may be exactly an input.
import type { GatedActivation, Tensor } from "../types.ts";
import { dropoutHash, dropoutThreshold } from "../../util/dropout-hash.ts";
import { fail } from "../checks.ts";
import { checkAdd, checkAddBias, checkBiasBackward, checkDropoutApply, checkDropoutMask, checkScale, checkSoftcapOp, checkSwigluBackward, checkSwigluForward } from "../op-checks.ts";
import { expectSeparate, outputFloats, readFloats, u8Data, writeFloats, type TensorStore } from "./store.ts";

/** out = a + b (same shape); out may be a or b. */
export function add(store: TensorStore, out: Tensor, a: Tensor, b: Tensor): void {
  const op = "add";
  checkAdd(out, a, b);
  const outSlot = store.get(op, "out", out);
  const aSlot = store.get(op, "a", a);
  const bSlot = store.get(op, "b", b);
  expectSeparate(op, [["out", outSlot]], [["a", aSlot], ["b", bSlot]], true);
  const av = readFloats(aSlot);
  const bv = readFloats(bSlot);
  const o = outputFloats(outSlot, false);
  for (let i = 0; i < o.length; i++) o[i] = av[i]! + bv[i]!;
  writeFloats(outSlot, o);
}

/** x *= s, with s rounded to float32 as a kernel argument would be. */
export function scale(store: TensorStore, x: Tensor, s: number): void {
  const op = "scale";
  checkScale(x, s);
  const slot = store.get(op, "x", x);
  const s32 = Math.fround(s);
  const v = outputFloats(slot, true);
  for (let i = 0; i < v.length; i++) v[i] = v[i]! * s32;
  writeFloats(slot, v);
}

/** mask = 1 where the element's counter hash reaches the threshold of p (see Backend.dropoutMask). */
export function dropoutMask(store: TensorStore, mask: Tensor, p: number, seed: readonly [number, number]): void {
  const op = "dropoutMask";
  checkDropoutMask(mask, p, seed);
  const [s0, s1] = seed;
  const keep = u8Data(op, "mask", store.get(op, "mask", mask));
  const threshold = dropoutThreshold(p);
  for (let i = 0; i < keep.length; i++) keep[i] = dropoutHash(i, s0, s1) >>> 8 >= threshold ? 1 : 0;
}

/** out = x * mask * float32(1 / (1 - p)), mask u8 of 0 (drop) and 1 (keep); p = 0 copies x. */
export function dropoutApply(store: TensorStore, out: Tensor, x: Tensor, mask: Tensor, p: number): void {
  const op = "dropoutApply";
  checkDropoutApply(out, x, mask, p);
  const outSlot = store.get(op, "out", out);
  const xSlot = store.get(op, "x", x);
  const maskSlot = store.get(op, "mask", mask);
  expectSeparate(op, [["out", outSlot]], [["x", xSlot], ["mask", maskSlot]], true);
  const xv = readFloats(xSlot);
  const o = outputFloats(outSlot, false);
  if (p === 0) {
    o.set(xv);
  } else {
    const keep = u8Data(op, "mask", maskSlot);
    const factor = Math.fround(1 / (1 - p));
    for (let i = 0; i < o.length; i++) {
      const m = keep[i]!;
      if (m > 1) fail(op, `mask element ${i} is ${m}, expected 0 (drop) or 1 (keep)`);
      o[i] = m === 1 ? xv[i]! * factor : 0;
    }
  }
  writeFloats(outSlot, o);
}

const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_K = 0.044715;

/** act(g) and act'(g) of the gated MLP, in float64. */
function activationAndSlope(g: number, activation: GatedActivation): [number, number] {
  if (activation === "silu") {
    const sig = 1 / (1 + Math.exp(-g));
    return [g * sig, sig * (1 + g * (1 - sig))];
  }
  // PyTorch's gelu(approximate="tanh"): 0.5 g (1 + tanh(u)), u = sqrt(2/pi) (g + 0.044715 g^3).
  const t = Math.tanh(GELU_C * (g + GELU_K * g * g * g));
  return [0.5 * g * (1 + t), 0.5 * (1 + t) + 0.5 * g * (1 - t * t) * GELU_C * (1 + 3 * GELU_K * g * g)];
}

/** out = act(gate) * up: silu(g) = g / (1 + exp(-g)) (SwiGLU), or tanh GELU (GeGLU). */
export function swigluForward(store: TensorStore, out: Tensor, gate: Tensor, up: Tensor, activation: GatedActivation = "silu"): void {
  const op = "swigluForward";
  checkSwigluForward(out, gate, up);
  const outSlot = store.get(op, "out", out);
  const gateSlot = store.get(op, "gate", gate);
  const upSlot = store.get(op, "up", up);
  expectSeparate(op, [["out", outSlot]], [["gate", gateSlot], ["up", upSlot]], true);
  const g = readFloats(gateSlot);
  const u = readFloats(upSlot);
  const o = outputFloats(outSlot, false);
  for (let i = 0; i < o.length; i++) o[i] = activationAndSlope(g[i]!, activation)[0] * u[i]!;
  writeFloats(outSlot, o);
}

/** dgate = dout * up * act'(g), dup = dout * act(g); both overwritten. */
export function swigluBackward(store: TensorStore, dgate: Tensor, dup: Tensor, dout: Tensor, gate: Tensor, up: Tensor, activation: GatedActivation = "silu"): void {
  const op = "swigluBackward";
  checkSwigluBackward(dgate, dup, dout, gate, up);
  const dgateSlot = store.get(op, "dgate", dgate);
  const dupSlot = store.get(op, "dup", dup);
  const doutSlot = store.get(op, "dout", dout);
  const gateSlot = store.get(op, "gate", gate);
  const upSlot = store.get(op, "up", up);
  // Both outputs read the same three inputs, so an output may not replace an input another output still needs.
  expectSeparate(op, [["dgate", dgateSlot], ["dup", dupSlot]], [["dout", doutSlot], ["gate", gateSlot], ["up", upSlot]]);
  const d = readFloats(doutSlot);
  const g = readFloats(gateSlot);
  const u = readFloats(upSlot);
  const dg = outputFloats(dgateSlot, false);
  const du = outputFloats(dupSlot, false);
  for (let i = 0; i < dg.length; i++) {
    const [act, slope] = activationAndSlope(g[i]!, activation);
    du[i] = d[i]! * act;
    dg[i] = d[i]! * u[i]! * slope;
  }
  writeFloats(dgateSlot, dg);
  writeFloats(dupSlot, du);
}

/** out (..., F) += bias (F) broadcast over rows. */
export function addBias(store: TensorStore, out: Tensor, bias: Tensor): void {
  const op = "addBias";
  const { rows, cols } = checkAddBias(out, bias);
  const outSlot = store.get(op, "out", out);
  const biasSlot = store.get(op, "bias", bias);
  expectSeparate(op, [["out", outSlot]], [["bias", biasSlot]]);
  const b = readFloats(biasSlot);
  const o = outputFloats(outSlot, true);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let j = 0; j < cols; j++) o[base + j] = o[base + j]! + b[j]!;
  }
  writeFloats(outSlot, o);
}

/** dbias (F) += column sums of dout (..., F), summed in float64 and added once. */
export function biasBackward(store: TensorStore, dbias: Tensor, dout: Tensor): void {
  const op = "biasBackward";
  const { rows, cols } = checkBiasBackward(dbias, dout);
  const dbiasSlot = store.get(op, "dbias", dbias);
  const doutSlot = store.get(op, "dout", dout);
  expectSeparate(op, [["dbias", dbiasSlot]], [["dout", doutSlot]]);
  const d = readFloats(doutSlot);
  const sums = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let j = 0; j < cols; j++) sums[j] = sums[j]! + d[base + j]!;
  }
  const o = outputFloats(dbiasSlot, true);
  for (let j = 0; j < cols; j++) o[j] = o[j]! + sums[j]!;
  writeFloats(dbiasSlot, o);
}

/** x = cap * tanh(x / cap) in place, in float64 from the float32 value and cap. */
export function softcap(store: TensorStore, x: Tensor, cap: number): void {
  checkSoftcapOp(x, cap);
  const slot = store.get("softcap", "x", x);
  const c = Math.fround(cap);
  const v = outputFloats(slot, true);
  for (let i = 0; i < v.length; i++) v[i] = c * Math.tanh(v[i]! / c);
  writeFloats(slot, v);
}
