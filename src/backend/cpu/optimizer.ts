// Optimizer ops for the CPU backend: PyTorch's single-tensor AdamW step in float32, operation by operation,
// and the float64 sum of squares used for gradient-norm clipping.
import type { AdamWParams, Tensor } from "../types.ts";
import { checkAdamwUpdate, checkSumSquares } from "../op-checks.ts";
import { expectSeparate, f32Data, readFloats, type TensorStore } from "./store.ts";

const f32 = Math.fround;

/**
 * torch.optim.AdamW's _single_tensor_adamw for float32 tensors (Python-float hyperparameters are
 * computed in float64 and become float32 kernel scalars; each tensor op rounds to float32):
 *   param.mul_(1 - lr * wd)
 *   exp_avg.lerp_(grad, 1 - beta1)
 *   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
 *   denom = (exp_avg_sq.sqrt() / sqrt(1 - beta2^t)).add_(eps)
 *   param.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1^t))   CPU order: (value * exp_avg) / denom
 */
export function adamwUpdate(store: TensorStore, params: Tensor, grads: Tensor, m: Tensor, v: Tensor, p: AdamWParams): void {
  const op = "adamwUpdate";
  checkAdamwUpdate(params, grads, m, v, p);
  const tensors = [["params", params], ["grads", grads], ["m", m], ["v", v]] as const;
  const [ps, gs, ms, vs] = tensors.map(([what, t]) => store.get(op, what, t));
  expectSeparate(op, [["params", ps!], ["m", ms!], ["v", vs!]], [["grads", gs!]]);
  const param = f32Data(op, "params", ps!);
  const grad = f32Data(op, "grads", gs!);
  const expAvg = f32Data(op, "m", ms!);
  const expAvgSq = f32Data(op, "v", vs!);
  const decay = f32(1 - p.lr * p.weightDecay);
  const lerpWeight = f32(1 - p.beta1);
  const smallWeight = Math.abs(lerpWeight) < 0.5;
  const lerpComplement = f32(1 - lerpWeight);
  const beta2 = f32(p.beta2);
  const sqWeight = f32(1 - p.beta2);
  const biasCorrection2Sqrt = f32(Math.sqrt(1 - p.beta2 ** p.step));
  const eps = f32(p.eps);
  const negStepSize = f32(-(p.lr / (1 - p.beta1 ** p.step)));
  for (let i = 0; i < param.length; i++) {
    const g = grad[i]!;
    const pi = f32(param[i]! * decay);
    // torch's lerp: m + w * (g - m) for |w| < 0.5, else g - (g - m) * (1 - w); the multiply-add is fused.
    const diff = f32(g - expAvg[i]!);
    const mi = smallWeight ? f32(expAvg[i]! + lerpWeight * diff) : f32(g - diff * lerpComplement);
    const vi = f32(f32(expAvgSq[i]! * beta2) + f32(f32(sqWeight * g) * g));
    const denom = f32(f32(f32(Math.sqrt(vi)) / biasCorrection2Sqrt) + eps);
    param[i] = pi + f32(f32(negStepSize * mi) / denom);
    expAvg[i] = mi;
    expAvgSq[i] = vi;
  }
}

/** Sum of squares of a float tensor, accumulated in float64. */
export function sumSquares(store: TensorStore, x: Tensor): number {
  const op = "sumSquares";
  checkSumSquares(x);
  const values = readFloats(store.get(op, "x", x));
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i]! * values[i]!;
  return sum;
}
