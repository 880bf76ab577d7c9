// Storage checks and launch sizing shared by the CUDA op wrappers: device-memory overlap (what the CPU backend's
// store.ts expectSeparate does for slots), 32-bit kernel sizes, and kernel arguments. Op checks: ../../op-checks.ts.
import { fail } from "../../checks.ts";
import { DTYPE_BYTES, FLOAT_DTYPE_CODE, type CudaDevice, type DeviceTensor, type KernelArg } from "../types.ts";

/** A size a kernel takes as a 32-bit int (a row length, a vocabulary). */
export function expectInt32(op: string, what: string, value: number): void {
  if (value > 0x7fffffff) fail(op, `${what} ${value} does not fit the kernel's 32-bit int; split the tensor`);
}

type Named = readonly [string, DeviceTensor];

function byteEnd(t: DeviceTensor): bigint {
  return t.ptr + BigInt(t.size * DTYPE_BYTES[t.dtype]);
}

function overlaps(a: DeviceTensor, b: DeviceTensor): boolean {
  return a.size > 0 && b.size > 0 && a.ptr < byteEnd(b) && b.ptr < byteEnd(a);
}

/**
 * Throws unless outputs share no device memory with each other or with the inputs. With `exactAlias`, an
 * output may be exactly an input (same address, dtype and size), for kernels that read an element before writing it.
 */
export function expectSeparate(op: string, outputs: readonly Named[], inputs: readonly Named[], exactAlias = false): void {
  outputs.forEach(([what, t], i) => {
    for (const [otherWhat, other] of outputs.slice(i + 1)) {
      if (overlaps(t, other)) fail(op, `${what} and ${otherWhat} share device memory`);
    }
    for (const [inWhat, input] of inputs) {
      if (!overlaps(t, input)) continue;
      const exact = t.ptr === input.ptr && t.dtype === input.dtype && t.size === input.size;
      if (exactAlias && exact) continue;
      fail(op, `${what} shares device memory with ${inWhat}${exactAlias ? "; it may only be exactly the same tensor" : "; write to a separate tensor"}`);
    }
  });
}

export function ptr(t: DeviceTensor): KernelArg {
  return { ptr: t.ptr };
}

/** The dtype code argument (kernels/common.cuh ld/st) of a float tensor. */
export function dtypeCode(op: string, what: string, t: DeviceTensor): KernelArg {
  const code = FLOAT_DTYPE_CODE[t.dtype];
  if (code === undefined) fail(op, `${what} dtype ${t.dtype} is not a float dtype`);
  return { i32: code };
}

/** A tensor argument followed by its dtype code, the pair every float tensor parameter of the kernels takes. */
export function floatArgs(op: string, what: string, t: DeviceTensor): KernelArg[] {
  return [ptr(t), dtypeCode(op, what, t)];
}

/**
 * Blocks for a grid-stride loop over `work` items with `block` threads: enough to fill the GPU several
 * times over (so the tail wave is short), never more than one item per thread.
 */
export function strideGrid(dev: CudaDevice, work: number, block: number): number {
  return Math.max(1, Math.min(Math.ceil(work / block), dev.multiprocessorCount * 32));
}

/** Threads for a block walking one row of `cols` elements: about 8 elements per thread, 32 to 1024 threads. */
export function rowBlock(cols: number): number {
  return Math.min(1024, Math.max(32, Math.ceil(cols / 8 / 32) * 32));
}

/** Most blocks a one-block-per-row kernel launches (it strides over further rows). */
export const MAX_ROW_BLOCKS = 65535;
