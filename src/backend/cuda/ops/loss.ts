// CUDA token cross-entropy (kernels/loss.cu): per-row losses and the softmax gradient, one block per row,
// with the CPU backend's checks except the per-target range check (targets stay on the device: a bad one gives NaN).
import type { CudaDevice, DeviceTensor } from "../types.ts";
import { checkCrossEntropyBackward, checkCrossEntropyForward, checkSoftcap } from "../../op-checks.ts";
import { expectInt32, expectSeparate, floatArgs, ptr, MAX_ROW_BLOCKS } from "./device-checks.ts";

/** 1024 threads for LLM vocabularies (32k to 152k: ~150 logits a thread), fewer for small ones. */
function vocabBlock(vocab: number): number {
  return Math.min(1024, Math.max(32, Math.ceil(vocab / 16 / 32) * 32));
}

/** losses f32 (N) = logsumexp(logits row) - logits[target]; 0 where the target is -100. */
export function crossEntropyForward(dev: CudaDevice, losses: DeviceTensor, logits: DeviceTensor, targets: DeviceTensor): void {
  const op = "crossEntropyForward";
  const { rows, vocab } = checkCrossEntropyForward(losses, logits, targets);
  expectInt32(op, "vocab", vocab);
  expectSeparate(op, [["losses", losses]], [["logits", logits], ["targets", targets]]);
  if (rows === 0) return;
  dev.module("loss.cu").fn("cross_entropy_forward").launch([Math.min(rows, MAX_ROW_BLOCKS), 1, 1], [vocabBlock(vocab), 1, 1], 0, [
    ptr(losses),
    ...floatArgs(op, "logits", logits),
    ptr(targets),
    { i64: rows },
    { i32: vocab },
  ]);
}

/** dlogits (N, V) = (softmax(row) - onehot(target)) * gradScale, zero rows for -100; dlogits may be exactly logits. */
export function crossEntropyBackward(dev: CudaDevice, dlogits: DeviceTensor, logits: DeviceTensor, targets: DeviceTensor, gradScale: number, softcap?: number): void {
  const op = "crossEntropyBackward";
  checkSoftcap(op, softcap);
  const { rows, vocab } = checkCrossEntropyBackward(dlogits, logits, targets, gradScale);
  expectInt32(op, "vocab", vocab);
  expectSeparate(op, [["dlogits", dlogits]], [["logits", logits]], true);
  expectSeparate(op, [["dlogits", dlogits]], [["targets", targets]]);
  if (rows === 0) return;
  dev.module("loss.cu").fn("cross_entropy_backward").launch([Math.min(rows, MAX_ROW_BLOCKS), 1, 1], [vocabBlock(vocab), 1, 1], 0, [
    ...floatArgs(op, "dlogits", dlogits),
    ...floatArgs(op, "logits", logits),
    ptr(targets),
    { i64: rows },
    { i32: vocab },
    { f32: gradScale },
    { f32: softcap ?? 0 },
  ]);
}
