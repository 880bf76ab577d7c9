// Rotary embedding for the CPU backend, as HF's rotate_half: dimension j pairs with j + D/2, angle
// float32(float32(position) * invFreq[j]), cos and sin rounded to float32; the backward rotates back.
import type { Tensor } from "../types.ts";
import { checkRope } from "../op-checks.ts";
import { expectSeparate, f32Data, i32Data, outputFloats, writeFloats, type TensorStore } from "./store.ts";

/** Rotates x (N, heads, D) in place by +angle (forward) or -angle (backward, the transpose). */
function rotate(store: TensorStore, op: "ropeForward" | "ropeBackward", what: string, x: Tensor, positions: Tensor, invFreq: Tensor, direction: 1 | -1): void {
  const { tokens: n, heads, dim } = checkRope(op, what, x, positions, invFreq);
  const half = dim / 2;
  const xSlot = store.get(op, what, x);
  const freqSlot = store.get(op, "invFreq", invFreq);
  expectSeparate(op, [[what, xSlot]], [["invFreq", freqSlot]]);
  const pos = i32Data(op, "positions", store.get(op, "positions", positions));
  const freq = f32Data(op, "invFreq", freqSlot);
  const v = outputFloats(xSlot, true);
  const cos = new Float64Array(half);
  const sin = new Float64Array(half);
  for (let t = 0; t < n; t++) {
    const p = Math.fround(pos[t]!);
    for (let j = 0; j < half; j++) {
      const angle = Math.fround(p * freq[j]!);
      cos[j] = Math.fround(Math.cos(angle));
      sin[j] = direction * Math.fround(Math.sin(angle));
    }
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * dim;
      for (let j = 0; j < half; j++) {
        const x1 = v[base + j]!;
        const x2 = v[base + half + j]!;
        v[base + j] = x1 * cos[j]! - x2 * sin[j]!;
        v[base + half + j] = x2 * cos[j]! + x1 * sin[j]!;
      }
    }
  }
  writeFloats(xSlot, v);
}

/** In-place rotary embedding on x (N, heads, D); positions i32 (N) restart per packed document; invFreq f32 (D/2). */
export function ropeForward(store: TensorStore, x: Tensor, positions: Tensor, invFreq: Tensor): void {
  rotate(store, "ropeForward", "x", x, positions, invFreq, 1);
}

/** In-place inverse rotation of a gradient dx (N, heads, D): the transpose of the forward's rotation. */
export function ropeBackward(store: TensorStore, dx: Tensor, positions: Tensor, invFreq: Tensor): void {
  rotate(store, "ropeBackward", "dx", dx, positions, invFreq, -1);
}
