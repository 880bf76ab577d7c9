// Element counts of tensor shapes, shared by every layer (safetensors, backends, models, quantization).
// A shape of rank 0 holds one element.

/** The number of elements of a row-major tensor of this shape. */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
