// DoRA's ops on the CPU (the reference): row norms of the adapted weight, the output combination and its
// backward, as PEFT's DoraLinearLayer computes them. Sums run in float64 from float32 inputs; each output
// element is rounded once. Outputs may be exactly the inputs the docs name (each element is read first).
import type { Tensor } from "../types.ts";
import { checkDoraBackward, checkDoraForward, checkRowNorms } from "../op-checks.ts";
import { expectSeparate, outputFloats, readFloats, writeFloats, type TensorStore } from "./store.ts";

/** norms (R) = sqrt(sum over the row of x (R, C) squared). */
export function rowNorms(store: TensorStore, norms: Tensor, x: Tensor): void {
  const op = "rowNorms";
  const { rows, cols } = checkRowNorms(norms, x);
  const normsSlot = store.get(op, "norms", norms);
  const xSlot = store.get(op, "x", x);
  expectSeparate(op, [["norms", normsSlot]], [["x", xSlot]]);
  const v = readFloats(xSlot);
  const o = outputFloats(normsSlot, false);
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    for (let i = r * cols, end = i + cols; i < end; i++) sum += v[i]! * v[i]!;
    o[r] = Math.sqrt(sum);
  }
  writeFloats(normsSlot, o);
}

/** g = magnitude / norms per column, in float64. */
function columnScales(store: TensorStore, op: string, magnitude: Tensor, norms: Tensor): Float64Array {
  const m = readFloats(store.get(op, "magnitude", magnitude));
  const n = readFloats(store.get(op, "norms", norms));
  const g = new Float64Array(m.length);
  for (let j = 0; j < g.length; j++) g[j] = m[j]! / n[j]!;
  return g;
}

/** y += (g - 1) * base + g * lora, g = magnitude / norms per column; y may be exactly base. */
export function doraForward(store: TensorStore, y: Tensor, base: Tensor, lora: Tensor, magnitude: Tensor, norms: Tensor): void {
  const op = "doraForward";
  const { rows, cols } = checkDoraForward(y, base, lora, magnitude, norms);
  const ySlot = store.get(op, "y", y);
  const baseSlot = store.get(op, "base", base);
  const loraSlot = store.get(op, "lora", lora);
  expectSeparate(op, [["y", ySlot]], [["base", baseSlot]], true);
  expectSeparate(op, [["y", ySlot]], [["lora", loraSlot], ["magnitude", store.get(op, "magnitude", magnitude)], ["norms", store.get(op, "norms", norms)]]);
  const g = columnScales(store, op, magnitude, norms);
  const b = readFloats(baseSlot);
  const l = readFloats(loraSlot);
  const o = outputFloats(ySlot, true);
  for (let r = 0; r < rows; r++) {
    for (let j = 0, i = r * cols; j < cols; j++, i++) o[i] = o[i]! + (g[j]! - 1) * b[i]! + g[j]! * l[i]!;
  }
  writeFloats(ySlot, o);
}

/**
 * dmagnitude += column sums of dy * (base + lora) / norms; dlora = g * dy; dbase = (g - 1) * dy when given.
 * dlora may be exactly lora and dbase exactly base.
 */
export function doraBackward(
  store: TensorStore,
  dmagnitude: Tensor,
  dlora: Tensor,
  dbase: Tensor | null,
  dy: Tensor,
  base: Tensor,
  lora: Tensor,
  magnitude: Tensor,
  norms: Tensor,
): void {
  const op = "doraBackward";
  const { rows, cols } = checkDoraBackward(dmagnitude, dlora, dbase, dy, base, lora, magnitude, norms);
  const dmSlot = store.get(op, "dmagnitude", dmagnitude);
  const dloraSlot = store.get(op, "dlora", dlora);
  const dbaseSlot = dbase === null ? null : store.get(op, "dbase", dbase);
  const dySlot = store.get(op, "dy", dy);
  const baseSlot = store.get(op, "base", base);
  const loraSlot = store.get(op, "lora", lora);
  const fixed: [string, typeof dySlot][] = [["dy", dySlot], ["magnitude", store.get(op, "magnitude", magnitude)], ["norms", store.get(op, "norms", norms)]];
  const outputs: [string, typeof dySlot][] = [["dmagnitude", dmSlot], ["dlora", dloraSlot], ...(dbaseSlot === null ? [] : [["dbase", dbaseSlot] as [string, typeof dySlot]])];
  expectSeparate(op, outputs, fixed);
  expectSeparate(op, outputs.slice(1), [["base", baseSlot], ["lora", loraSlot]], true);
  expectSeparate(op, [["dmagnitude", dmSlot]], [["base", baseSlot], ["lora", loraSlot]]);
  const n = readFloats(store.get(op, "norms", norms));
  const g = columnScales(store, op, magnitude, norms);
  const d = readFloats(dySlot);
  const b = readFloats(baseSlot);
  const l = readFloats(loraSlot);
  const sums = new Float64Array(cols);
  const dl = outputFloats(dloraSlot, false);
  const db = dbaseSlot === null ? null : outputFloats(dbaseSlot, false);
  for (let r = 0; r < rows; r++) {
    for (let j = 0, i = r * cols; j < cols; j++, i++) {
      const dyi = d[i]!;
      sums[j] = sums[j]! + dyi * (b[i]! + l[i]!);
      dl[i] = g[j]! * dyi;
      if (db !== null) db[i] = (g[j]! - 1) * dyi;
    }
  }
  writeFloats(dloraSlot, dl);
  if (dbaseSlot !== null && db !== null) writeFloats(dbaseSlot, db);
  const dm = outputFloats(dmSlot, true);
  for (let j = 0; j < cols; j++) dm[j] = dm[j]! + sums[j]! / n[j]!;
  writeFloats(dmSlot, dm);
}
