// matmul for the CPU backend: argument checks, float32 operands (bf16/f16 converted once per call), and the
// kernel run on this thread plus the worker pool. Semantics: float64 products and sums, one rounding per output.
import type { MatmulOptions, Tensor } from "../types.ts";
import { expectFinite, expectFloat, expectRank, expectShape } from "../checks.ts";
import { runGemm } from "./pool.ts";
import { expectSeparate, outputFloats, readFloats, writeFloats, type TensorStore } from "./store.ts";

/** out (M, N) = alpha * op(a) (M, K) @ op(b) (K, N) [+ out]; see MatmulOptions for the stored layouts. */
export function matmul(store: TensorStore, threads: number, out: Tensor, a: Tensor, b: Tensor, options: MatmulOptions = {}): void {
  const op = "matmul";
  const transA = options.transA ?? false;
  const transB = options.transB ?? false;
  const alpha = options.alpha ?? 1;
  const accumulate = options.accumulate ?? false;
  expectFinite(op, "alpha", alpha);
  for (const [what, t] of [["out", out], ["a", a], ["b", b]] as const) {
    expectFloat(op, what, t);
    expectRank(op, what, t, 2);
  }
  const [M, N] = out.shape as [number, number];
  const K = transA ? a.shape[0]! : a.shape[1]!;
  expectShape(op, transA ? "a (stored (K, M) for transA)" : "a", a, transA ? [K, M] : [M, K]);
  expectShape(op, transB ? "b (stored (N, K) for transB)" : "b", b, transB ? [N, K] : [K, N]);
  const outSlot = store.get(op, "out", out);
  const aSlot = store.get(op, "a", a);
  const bSlot = store.get(op, "b", b);
  expectSeparate(op, [["out", outSlot]], [["a", aSlot], ["b", bSlot]]);
  const c = outputFloats(outSlot, accumulate, store.shared);
  runGemm(
    {
      c,
      a: readFloats(aSlot, store.shared),
      b: readFloats(bSlot, store.shared),
      M,
      N,
      K,
      transA,
      transB,
      alpha: Math.fround(alpha),
      accumulate,
    },
    store.shared ? threads : 1,
  );
  writeFloats(outSlot, c);
}
