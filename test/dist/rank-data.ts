// The buffer each rank contributes in the host-transport scenarios: values that differ by rank and
// position, rounded to float32 once.
export function rankData(r: number, n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.fround((r + 1) * 0.1 * (i + 1) - i * 0.01));
}
