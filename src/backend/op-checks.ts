// Each op's backend-independent argument checks (dtypes, shapes, ranks, scalar ranges), one function per op,
// called by the CPU and CUDA backends alike; storage checks (liveness, overlap, data values) stay in each backend.
import type { AdamWParams } from "./types.ts";
import { isBlocksize } from "../quant/blockwise.ts";
import { describe, expectDtype, expectFinite, expectFloat, expectRank, expectShape, fail, splitLastAxis, type TensorLike } from "./checks.ts";
import { numel } from "../util/shape.ts";

/** out (..., C), rstd f32 (...), x (..., C), weight (C); returns the rows and C. */
export function checkRmsnormForward(out: TensorLike, rstd: TensorLike, x: TensorLike, weight: TensorLike, eps: number): { rows: number; cols: number } {
  const op = "rmsnormForward";
  expectFloat(op, "out", out);
  expectFloat(op, "x", x);
  expectFloat(op, "weight", weight);
  expectDtype(op, "rstd", rstd, ["f32"]);
  expectFinite(op, "eps", eps);
  const split = splitLastAxis(op, "x", x);
  expectShape(op, "out", out, x.shape);
  expectShape(op, "weight", weight, [split.cols]);
  expectShape(op, "rstd", rstd, x.shape.slice(0, -1));
  return split;
}

/** dx, dout and x (..., C), weight (C), rstd f32 (...), dweight (C) when given; returns the rows and C. */
export function checkRmsnormBackward(
  dx: TensorLike,
  dweight: TensorLike | null,
  dout: TensorLike,
  x: TensorLike,
  weight: TensorLike,
  rstd: TensorLike,
): { rows: number; cols: number } {
  const op = "rmsnormBackward";
  for (const [what, t] of [["dx", dx], ["dout", dout], ["x", x], ["weight", weight]] as const) expectFloat(op, what, t);
  expectDtype(op, "rstd", rstd, ["f32"]);
  const split = splitLastAxis(op, "x", x);
  expectShape(op, "dx", dx, x.shape);
  expectShape(op, "dout", dout, x.shape);
  expectShape(op, "weight", weight, [split.cols]);
  expectShape(op, "rstd", rstd, x.shape.slice(0, -1));
  if (dweight !== null) {
    expectFloat(op, "dweight", dweight);
    expectShape(op, "dweight", dweight, [split.cols]);
  }
  return split;
}

/** out, a and b float, all of a's shape. */
export function checkAdd(out: TensorLike, a: TensorLike, b: TensorLike): void {
  const op = "add";
  for (const [what, t] of [["out", out], ["a", a], ["b", b]] as const) expectFloat(op, what, t);
  expectShape(op, "b", b, a.shape);
  expectShape(op, "out", out, a.shape);
}

export function checkScale(x: TensorLike, s: number): void {
  const op = "scale";
  expectFloat(op, "x", x);
  expectFinite(op, "s", s);
}

/** Dropout probability p of the mask and apply ops: 0 <= p < 1 (p = 1 would scale by infinity). */
function expectDropoutP(op: string, p: number): void {
  if (!(p >= 0 && p < 1)) fail(op, `p is ${p}, expected 0 <= p < 1`);
}

/** mask u8 of at most 2^32 elements (the hash's index), 0 <= p < 1, seed two 32-bit unsigned words. */
export function checkDropoutMask(mask: TensorLike, p: number, seed: readonly [number, number]): void {
  const op = "dropoutMask";
  expectDtype(op, "mask", mask, ["u8"]);
  expectDropoutP(op, p);
  if (mask.size > 2 ** 32) fail(op, `mask has ${mask.size} elements; the hash indexes at most 2^32`);
  for (const s of seed) if (!Number.isInteger(s) || s < 0 || s >= 2 ** 32) fail(op, `seed word ${s} is not a 32-bit unsigned integer`);
}

/** out and x float, mask u8, all of x's shape, 0 <= p < 1. */
export function checkDropoutApply(out: TensorLike, x: TensorLike, mask: TensorLike, p: number): void {
  const op = "dropoutApply";
  expectFloat(op, "out", out);
  expectFloat(op, "x", x);
  expectDtype(op, "mask", mask, ["u8"]);
  expectShape(op, "mask", mask, x.shape);
  expectShape(op, "out", out, x.shape);
  expectDropoutP(op, p);
}

/** out, gate and up float, all of gate's shape. */
export function checkSwigluForward(out: TensorLike, gate: TensorLike, up: TensorLike): void {
  const op = "swigluForward";
  for (const [what, t] of [["out", out], ["gate", gate], ["up", up]] as const) expectFloat(op, what, t);
  expectShape(op, "up", up, gate.shape);
  expectShape(op, "out", out, gate.shape);
}

/** dgate, dup, dout, gate and up float, all of gate's shape. */
export function checkSwigluBackward(dgate: TensorLike, dup: TensorLike, dout: TensorLike, gate: TensorLike, up: TensorLike): void {
  const op = "swigluBackward";
  for (const [what, t] of [["dgate", dgate], ["dup", dup], ["dout", dout], ["gate", gate], ["up", up]] as const) {
    expectFloat(op, what, t);
    expectShape(op, what, t, gate.shape);
  }
}

/** out (..., F) and bias (F) float; returns out's rows and F. */
export function checkAddBias(out: TensorLike, bias: TensorLike): { rows: number; cols: number } {
  const op = "addBias";
  expectFloat(op, "out", out);
  expectFloat(op, "bias", bias);
  const split = splitLastAxis(op, "out", out);
  expectShape(op, "bias", bias, [split.cols]);
  return split;
}

/** dbias (F) and dout (..., F) float; returns dout's rows and F. */
export function checkBiasBackward(dbias: TensorLike, dout: TensorLike): { rows: number; cols: number } {
  const op = "biasBackward";
  expectFloat(op, "dbias", dbias);
  expectFloat(op, "dout", dout);
  const split = splitLastAxis(op, "dout", dout);
  expectShape(op, "dbias", dbias, [split.cols]);
  return split;
}

/** out (N, C) and table (V, C) float, ids i32 (N); returns V and C. The ids' values are the backend's to check. */
export function checkEmbeddingForward(out: TensorLike, ids: TensorLike, table: TensorLike): { vocab: number; channels: number } {
  const op = "embeddingForward";
  expectFloat(op, "out", out);
  expectFloat(op, "table", table);
  expectRank(op, "table", table, 2);
  expectDtype(op, "ids", ids, ["i32"]);
  expectRank(op, "ids", ids, 1);
  const [vocab, channels] = table.shape as [number, number];
  expectShape(op, "out", out, [ids.size, channels]);
  return { vocab, channels };
}

/** dtable (V, C) and dout (N, C) float, ids i32 (N); returns V and C. */
export function checkEmbeddingBackward(dtable: TensorLike, dout: TensorLike, ids: TensorLike): { vocab: number; channels: number } {
  const op = "embeddingBackward";
  expectFloat(op, "dtable", dtable);
  expectRank(op, "dtable", dtable, 2);
  expectFloat(op, "dout", dout);
  expectDtype(op, "ids", ids, ["i32"]);
  expectRank(op, "ids", ids, 1);
  const [vocab, channels] = dtable.shape as [number, number];
  expectShape(op, "dout", dout, [ids.size, channels]);
  return { vocab, channels };
}

/**
 * ropeForward's x or ropeBackward's dx (`what`): float (N, heads, D) with D even; positions i32 (N), invFreq
 * f32 (D/2). Returns N, heads and D.
 */
export function checkRope(
  op: "ropeForward" | "ropeBackward",
  what: string,
  x: TensorLike,
  positions: TensorLike,
  invFreq: TensorLike,
): { tokens: number; heads: number; dim: number } {
  expectFloat(op, what, x);
  expectRank(op, what, x, 3);
  expectDtype(op, "positions", positions, ["i32"]);
  expectDtype(op, "invFreq", invFreq, ["f32"]);
  const [tokens, heads, dim] = x.shape as [number, number, number];
  if (dim % 2 !== 0) fail(op, `${describe(what, x)} head dim ${dim} is odd; rotate_half pairs j with j + D/2`);
  expectShape(op, "positions", positions, [tokens]);
  expectShape(op, "invFreq", invFreq, [dim / 2]);
  return { tokens, heads, dim };
}

/** A bitsandbytes blocksize; x float (n), packed u8 (ceil(n/2)), absmax f32 (ceil(n/blocksize)). */
export function checkQuantize4bit(packed: TensorLike, absmax: TensorLike, x: TensorLike, blocksize: number): void {
  const op = "quantize4bit";
  const n = x.size;
  if (!isBlocksize(blocksize)) fail(op, `blocksize ${blocksize} is not one bitsandbytes supports`);
  expectFloat(op, "x", x);
  expectDtype(op, "packed", packed, ["u8"]);
  expectDtype(op, "absmax", absmax, ["f32"]);
  expectShape(op, "packed", packed, [Math.ceil(n / 2)]);
  expectShape(op, "absmax", absmax, [Math.ceil(n / blocksize)]);
}

/** The 4-bit weight as either backend holds it (Quant4bitTensors, or its device twin). */
export interface Quant4bitLike {
  readonly packed: TensorLike;
  readonly absmax: TensorLike;
  readonly code: TensorLike;
  readonly blocksize: number;
}

/** out float (n elements, any shape), packed u8 of ceil(n/2) elements, absmax f32 (ceil(n/blocksize)), code f32 (16). */
export function checkDequantize4bit(out: TensorLike, q: Quant4bitLike): void {
  const op = "dequantize4bit";
  const n = out.size;
  const { blocksize } = q;
  if (!Number.isSafeInteger(blocksize) || blocksize <= 0) fail(op, `blocksize ${blocksize} is not a positive integer`);
  expectFloat(op, "out", out);
  expectDtype(op, "packed", q.packed, ["u8"]);
  expectDtype(op, "absmax", q.absmax, ["f32"]);
  expectDtype(op, "code", q.code, ["f32"]);
  // bitsandbytes stores packed as [n/2, 1] and absmax flat; only the element counts matter.
  expectShape(op, "packed (element count)", q.packed, q.packed.shape.length === 1 ? [Math.ceil(n / 2)] : sizedLike(q.packed.shape, Math.ceil(n / 2)));
  expectShape(op, "absmax", q.absmax, [Math.ceil(n / blocksize)]);
  expectShape(op, "code", q.code, [16]);
}

/** The shape itself when its element count is `size`, else a rank-1 shape that will not match (for the message). */
function sizedLike(shape: readonly number[], size: number): readonly number[] {
  return numel(shape) === size ? shape : [size];
}

/** logits float (N, V), targets i32 (N); returns N and V. The targets' values are the backend's to check. */
function checkLogits(op: string, logits: TensorLike, targets: TensorLike): { rows: number; vocab: number } {
  expectFloat(op, "logits", logits);
  expectRank(op, "logits", logits, 2);
  expectDtype(op, "targets", targets, ["i32"]);
  const [rows, vocab] = logits.shape as [number, number];
  expectShape(op, "targets", targets, [rows]);
  return { rows, vocab };
}

/** losses f32 (N), logits float (N, V), targets i32 (N); returns N and V. */
export function checkCrossEntropyForward(losses: TensorLike, logits: TensorLike, targets: TensorLike): { rows: number; vocab: number } {
  const op = "crossEntropyForward";
  const sizes = checkLogits(op, logits, targets);
  expectDtype(op, "losses", losses, ["f32"]);
  expectShape(op, "losses", losses, [sizes.rows]);
  return sizes;
}

/** dlogits and logits float (N, V), targets i32 (N), a finite gradScale; returns N and V. */
export function checkCrossEntropyBackward(dlogits: TensorLike, logits: TensorLike, targets: TensorLike, gradScale: number): { rows: number; vocab: number } {
  const op = "crossEntropyBackward";
  const sizes = checkLogits(op, logits, targets);
  expectFloat(op, "dlogits", dlogits);
  expectShape(op, "dlogits", dlogits, logits.shape);
  expectFinite(op, "gradScale", gradScale);
  return sizes;
}

/** params, grads, m and v f32 of one element count; finite hyperparameters; a 1-based integer step. */
export function checkAdamwUpdate(params: TensorLike, grads: TensorLike, m: TensorLike, v: TensorLike, p: AdamWParams): void {
  const op = "adamwUpdate";
  for (const [what, t] of [["params", params], ["grads", grads], ["m", m], ["v", v]] as const) {
    expectDtype(op, what, t, ["f32"]);
    if (t.size !== params.size) fail(op, `${describe(what, t)} has ${t.size} elements, params has ${params.size}`);
  }
  for (const key of ["lr", "beta1", "beta2", "eps", "weightDecay"] as const) expectFinite(op, key, p[key]);
  if (!Number.isSafeInteger(p.step) || p.step < 1) fail(op, `step is ${p.step}, expected an integer >= 1 (1-based)`);
}

export function checkSumSquares(x: TensorLike): void {
  expectFloat("sumSquares", "x", x);
}

/** norms (R) and x (R, C) float; returns R and C. */
export function checkRowNorms(norms: TensorLike, x: TensorLike): { rows: number; cols: number } {
  const op = "rowNorms";
  expectFloat(op, "norms", norms);
  expectFloat(op, "x", x);
  expectRank(op, "x", x, 2);
  const [rows, cols] = x.shape as [number, number];
  expectShape(op, "norms", norms, [rows]);
  return { rows, cols };
}

/** y, base and lora (..., F) float of one shape; magnitude and norms (F) float; returns the rows and F. */
export function checkDoraForward(y: TensorLike, base: TensorLike, lora: TensorLike, magnitude: TensorLike, norms: TensorLike): { rows: number; cols: number } {
  const op = "doraForward";
  for (const [what, t] of [["y", y], ["base", base], ["lora", lora], ["magnitude", magnitude], ["norms", norms]] as const) expectFloat(op, what, t);
  const split = splitLastAxis(op, "y", y);
  expectShape(op, "base", base, y.shape);
  expectShape(op, "lora", lora, y.shape);
  expectShape(op, "magnitude", magnitude, [split.cols]);
  expectShape(op, "norms", norms, [split.cols]);
  return split;
}

/** dy, base, lora, dlora and dbase (when given) (..., F) float of one shape; dmagnitude, magnitude and norms (F); returns the rows and F. */
export function checkDoraBackward(
  dmagnitude: TensorLike,
  dlora: TensorLike,
  dbase: TensorLike | null,
  dy: TensorLike,
  base: TensorLike,
  lora: TensorLike,
  magnitude: TensorLike,
  norms: TensorLike,
): { rows: number; cols: number } {
  const op = "doraBackward";
  const tensors: [string, TensorLike][] = [["dmagnitude", dmagnitude], ["dlora", dlora], ["dy", dy], ["base", base], ["lora", lora], ["magnitude", magnitude], ["norms", norms]];
  if (dbase !== null) tensors.push(["dbase", dbase]);
  for (const [what, t] of tensors) expectFloat(op, what, t);
  const split = splitLastAxis(op, "dy", dy);
  for (const [what, t] of [["dlora", dlora], ["base", base], ["lora", lora], ...(dbase === null ? [] : [["dbase", dbase]])] as [string, TensorLike][]) expectShape(op, what, t, dy.shape);
  for (const [what, t] of [["dmagnitude", dmagnitude], ["magnitude", magnitude], ["norms", norms]] as const) expectShape(op, what, t, [split.cols]);
  return split;
}

/** A sliding window is a positive integer (a window of 1 attends to the token itself only). */
export function checkAttentionWindow(op: string, window: number | undefined): void {
  if (window !== undefined && !(Number.isSafeInteger(window) && window >= 1)) fail(op, `window is ${window}, expected a positive integer`);
}

/** A soft-capping value is a positive finite number (absent: none). */
export function checkSoftcap(op: string, cap: number | undefined): void {
  if (cap !== undefined && !(Number.isFinite(cap) && cap > 0)) fail(op, `softcap is ${cap}, expected a positive number`);
}

/** x float; cap positive. */
export function checkSoftcapOp(x: TensorLike, cap: number): void {
  expectFloat("softcap", "x", x);
  checkSoftcap("softcap", cap);
}
