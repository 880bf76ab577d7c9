// Quantizing a tensor on worker threads: ggml's block formats are independent row by row, so the rows are cut
// into chunks, each encoded by encodeGgml on a worker, and the bytes put back in order — the same bytes as
// one thread makes (the K-quants cost ~0.5 us a value in JavaScript: a 7B model is most of an hour on one
// core). Small tensors and the cheap formats stay on the calling thread.
import { availableParallelism } from "node:os";
import { registerWorkerJobs, runInWorkers } from "../util/worker-pool.ts";
import type { GgmlTypeName } from "../io/gguf/format.ts";
import { encodeGgml } from "../io/gguf/quants.ts";

export const QUANTIZE_JOB_URL = import.meta.url;

interface QuantizeChunk {
  type: GgmlTypeName;
  rowLength: number;
  values: Float32Array;
}

/** The worker job: one chunk of whole rows. */
export function quantizeRows(chunk: QuantizeChunk): Uint8Array {
  return encodeGgml(chunk.values, chunk.rowLength, chunk.type);
}

registerWorkerJobs({ quantizeRows });

/** Formats slow enough to be worth the threads (the K-quant fits). */
const SLOW: ReadonlySet<GgmlTypeName> = new Set(["Q4_K", "Q5_K", "Q6_K"]);
const MIN_PARALLEL_VALUES = 1 << 20;

/** encodeGgml, on up to `threads` worker threads for large tensors of the slow formats. */
export async function encodeGgmlParallel(values: Float32Array, rowLength: number, type: GgmlTypeName, threads = availableParallelism()): Promise<Uint8Array> {
  if (!SLOW.has(type) || threads < 2 || values.length < MIN_PARALLEL_VALUES) return encodeGgml(values, rowLength, type);
  const rows = values.length / rowLength;
  const pieces = Math.min(rows, threads * 4);
  const rowsPer = Math.ceil(rows / pieces);
  const chunks: QuantizeChunk[] = [];
  for (let r = 0; r < rows; r += rowsPer) chunks.push({ type, rowLength, values: values.slice(r * rowLength, Math.min(rows, r + rowsPer) * rowLength) });
  const parts = await runInWorkers<typeof quantizeRows>(QUANTIZE_JOB_URL, "quantizeRows", chunks, threads);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
