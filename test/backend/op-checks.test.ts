// The shared op checks on plain tensor-shaped values: a named tensor (the public Tensor) is described with its
// name, a nameless one (a CUDA DeviceTensor) by its role alone, and each op returns the sizes it derived.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { DType } from "../../src/backend/types.ts";
import { isTunaError } from "../../src/util/errors.ts";
import type { TensorLike } from "../../src/backend/checks.ts";
import {
  checkAdamwUpdate,
  checkAddBias,
  checkCrossEntropyBackward,
  checkDequantize4bit,
  checkDropoutMask,
  checkEmbeddingBackward,
  checkRmsnormBackward,
  checkRmsnormForward,
  checkRope,
} from "../../src/backend/op-checks.ts";

/** A nameless tensor-shaped value, as a DeviceTensor is (no `name` property at all). */
function bare(dtype: DType, shape: readonly number[]): TensorLike {
  return { dtype, shape, size: shape.reduce((a, b) => a * b, 1) };
}

function named(dtype: DType, shape: readonly number[], name: string): TensorLike {
  return { ...bare(dtype, shape), name };
}

function assertInternal(fn: () => unknown, message: string): void {
  assert.throws(fn, (e: unknown) => isTunaError(e) && e.code === "INTERNAL" && e.message === message);
}

void test("a tensor's name is quoted when it has one and left out when it has none or it is empty", () => {
  const x = bare("bf16", [3, 8]);
  const rstd = bare("f32", [3]);
  assertInternal(() => checkRmsnormForward(x, rstd, x, bare("bf16", [7]), 1e-5), "rmsnormForward: weight shape [7] does not match [8]");
  assertInternal(() => checkRmsnormForward(x, rstd, x, named("bf16", [7], ""), 1e-5), "rmsnormForward: weight shape [7] does not match [8]");
  assertInternal(
    () => checkRmsnormForward(x, rstd, x, named("bf16", [7], "model.norm.weight"), 1e-5),
    'rmsnormForward: weight "model.norm.weight" shape [7] does not match [8]',
  );
  assertInternal(() => checkRmsnormForward(x, rstd, x, bare("i32", [8]), 1e-5), "rmsnormForward: weight dtype i32 is not f32 or bf16 or f16");
  assertInternal(() => checkRmsnormForward(x, rstd, x, bare("bf16", [8]), NaN), "rmsnormForward: eps is NaN, expected a finite number");
  const ones = bare("f32", [4]);
  assertInternal(() => { checkAdamwUpdate(ones, named("f32", [5], "lora_A"), ones, ones, { lr: 1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0, step: 1 }); }, 'adamwUpdate: grads "lora_A" has 5 elements, params has 4');
});

void test("the checks return the sizes the ops walk", () => {
  // (2, 3, 8): 6 rows of 8 channels.
  const x = bare("f32", [2, 3, 8]);
  assert.deepEqual(checkRmsnormForward(x, bare("f32", [2, 3]), x, bare("f32", [8]), 1e-6), { rows: 6, cols: 8 });
  assert.deepEqual(checkRmsnormBackward(x, null, x, x, bare("f32", [8]), bare("f32", [2, 3])), { rows: 6, cols: 8 });
  assert.deepEqual(checkAddBias(bare("bf16", [0, 5]), bare("bf16", [5])), { rows: 0, cols: 5 });
  assert.deepEqual(checkEmbeddingBackward(bare("f32", [10, 4]), bare("f32", [3, 4]), bare("i32", [3])), { vocab: 10, channels: 4 });
  assert.deepEqual(checkRope("ropeBackward", "dx", bare("f16", [5, 2, 6]), bare("i32", [5]), bare("f32", [3])), { tokens: 5, heads: 2, dim: 6 });
  assert.deepEqual(checkCrossEntropyBackward(bare("f32", [2, 7]), bare("bf16", [2, 7]), bare("i32", [2]), 0.5), { rows: 2, vocab: 7 });
});

void test("rmsnormBackward checks dweight only when it is given", () => {
  const x = bare("f32", [2, 4]);
  const args = [x, x, bare("f32", [4]), bare("f32", [2])] as const;
  assert.doesNotThrow(() => checkRmsnormBackward(x, null, ...args));
  assertInternal(() => checkRmsnormBackward(x, bare("f32", [3]), ...args), "rmsnormBackward: dweight shape [3] does not match [4]");
});

void test("dequantize4bit counts packed's elements whatever its shape, and says so in the message", () => {
  // 9 elements: ceil(9 / 2) = 5 packed bytes, ceil(9 / 4) = 3 absmax blocks of 4.
  const q = { absmax: bare("f32", [3]), code: bare("f32", [16]), blocksize: 4 };
  const out = bare("bf16", [3, 3]);
  for (const shape of [[5], [5, 1], [1, 5]]) assert.doesNotThrow(() => { checkDequantize4bit(out, { ...q, packed: bare("u8", shape) }); });
  assertInternal(() => { checkDequantize4bit(out, { ...q, packed: bare("u8", [4]) }); }, "dequantize4bit: packed (element count) shape [4] does not match [5]");
  assertInternal(() => { checkDequantize4bit(out, { ...q, packed: bare("u8", [2, 2]) }); }, "dequantize4bit: packed (element count) shape [2, 2] does not match [5]");
  assertInternal(() => { checkDequantize4bit(out, { ...q, packed: bare("u8", [5]), blocksize: 0 }); }, "dequantize4bit: blocksize 0 is not a positive integer");
});

void test("dropoutMask takes 0 <= p < 1 and two 32-bit unsigned seed words", () => {
  const mask = bare("u8", [16]);
  assert.doesNotThrow(() => { checkDropoutMask(mask, 0, [0, 2 ** 32 - 1]); });
  assertInternal(() => { checkDropoutMask(mask, 1, [1, 2]); }, "dropoutMask: p is 1, expected 0 <= p < 1");
  assertInternal(() => { checkDropoutMask(mask, NaN, [1, 2]); }, "dropoutMask: p is NaN, expected 0 <= p < 1");
  assertInternal(() => { checkDropoutMask(mask, 0.1, [1, 2 ** 32]); }, "dropoutMask: seed word 4294967296 is not a 32-bit unsigned integer");
  assertInternal(() => { checkDropoutMask(bare("f32", [16]), 0.1, [1, 2]); }, "dropoutMask: mask dtype f32 is not u8");
});
