// createCpuBackend: the CPU implementation of the backend contract, the reference every other backend is
// checked against. Wires the tensor store to the op files; matmul may use worker threads over shared storage.
import { availableParallelism, totalmem } from "node:os";
import type { Backend } from "../types.ts";
import { TunaError } from "../../util/errors.ts";
import { attentionBackward, attentionForward } from "./attention.ts";
import { attentionDecode } from "./attention-decode.ts";
import { doraBackward, doraForward, rowNorms } from "./dora.ts";
import { add, addBias, biasBackward, dropoutApply, dropoutMask, scale, softcap, swigluBackward, swigluForward } from "./elementwise.ts";
import { embeddingBackward, embeddingForward } from "./embedding.ts";
import { crossEntropyBackward, crossEntropyForward } from "./loss.ts";
import { matmul } from "./matmul.ts";
import { copy, download, downloadF32, fill, upload } from "./memory.ts";
import { rmsnormBackward, rmsnormForward } from "./norm.ts";
import { adamwUpdate, sumSquares } from "./optimizer.ts";
import { dequantize4bit, quantize4bit } from "./quant.ts";
import { ropeBackward, ropeForward } from "./rope.ts";
import { createTensorStore } from "./store.ts";

export interface CpuBackendOptions {
  /**
   * Threads for matmul, the calling thread included (default: the machine's available parallelism, at most 8).
   * With more than 1, tensor storage is SharedArrayBuffer-backed and large matmuls are split across workers.
   */
  threads?: number;
}

const MAX_DEFAULT_THREADS = 8;

export function createCpuBackend(options: CpuBackendOptions = {}): Backend {
  const threads = options.threads ?? Math.min(availableParallelism(), MAX_DEFAULT_THREADS);
  if (!Number.isSafeInteger(threads) || threads < 1) {
    throw new TunaError("INTERNAL", `createCpuBackend: threads is ${threads}, expected an integer >= 1`);
  }
  const store = createTensorStore(threads > 1);
  return {
    name: "cpu",
    alloc: (dtype, shape, name) => store.alloc(dtype, shape, name),
    free: (t) => {
      store.free(t);
    },
    upload: (t, data) => {
      upload(store, t, data);
    },
    download: (t) => Promise.resolve(download(store, t)),
    downloadF32: (t) => Promise.resolve(downloadF32(store, t)),
    fill: (t, value) => {
      fill(store, t, value);
    },
    copy: (dst, src) => {
      copy(store, dst, src);
    },
    rows: (t, start, count) => store.rows(t, start, count),
    view: (t, shape) => store.view(t, shape),
    // The tensors' bytes (what the planner predicts); the process also holds Node's heap and the data.
    memoryStats: () => ({ inUseBytes: store.bytesInUse(), peakInUseBytes: store.peakBytesInUse(), reservedBytes: store.bytesInUse(), totalBytes: totalmem() }),

    embeddingForward: (out, ids, table) => {
      embeddingForward(store, out, ids, table);
    },
    embeddingBackward: (dtable, dout, ids) => {
      embeddingBackward(store, dtable, dout, ids);
    },
    matmul: (out, a, b, opts) => {
      matmul(store, threads, out, a, b, opts);
    },
    addBias: (out, bias) => {
      addBias(store, out, bias);
    },
    biasBackward: (dbias, dout) => {
      biasBackward(store, dbias, dout);
    },
    rowNorms: (norms, x) => {
      rowNorms(store, norms, x);
    },
    doraForward: (y, base, lora, magnitude, norms) => {
      doraForward(store, y, base, lora, magnitude, norms);
    },
    doraBackward: (dmagnitude, dlora, dbase, dy, base, lora, magnitude, norms) => {
      doraBackward(store, dmagnitude, dlora, dbase, dy, base, lora, magnitude, norms);
    },
    rmsnormForward: (out, rstd, x, weight, eps, options) => {
      rmsnormForward(store, out, rstd, x, weight, eps, options);
    },
    rmsnormBackward: (dx, dweight, dout, x, weight, rstd, accumulate, options) => {
      rmsnormBackward(store, dx, dweight, dout, x, weight, rstd, accumulate, options);
    },
    ropeForward: (x, positions, invFreq) => {
      ropeForward(store, x, positions, invFreq);
    },
    ropeBackward: (dx, positions, invFreq) => {
      ropeBackward(store, dx, positions, invFreq);
    },
    attentionForward: (out, lse, q, k, v, cuSeqlens, s, options) => {
      attentionForward(store, out, lse, q, k, v, cuSeqlens, s, options);
    },
    attentionBackward: (dq, dk, dv, dout, q, k, v, out, lse, cuSeqlens, s, options) => {
      attentionBackward(store, dq, dk, dv, dout, q, k, v, out, lse, cuSeqlens, s, options);
    },
    attentionDecode: (out, q, kCache, vCache, pastLength, s, options) => {
      attentionDecode(store, out, q, kCache, vCache, pastLength, s, options);
    },
    swigluForward: (out, gate, up, activation) => {
      swigluForward(store, out, gate, up, activation);
    },
    swigluBackward: (dgate, dup, dout, gate, up, activation) => {
      swigluBackward(store, dgate, dup, dout, gate, up, activation);
    },
    softcap: (x, cap) => {
      softcap(store, x, cap);
    },
    add: (out, a, b) => {
      add(store, out, a, b);
    },
    scale: (x, s) => {
      scale(store, x, s);
    },
    dropoutMask: (mask, p, seed) => {
      dropoutMask(store, mask, p, seed);
    },
    dropoutApply: (out, x, mask, p) => {
      dropoutApply(store, out, x, mask, p);
    },
    crossEntropyForward: (losses, logits, targets) => {
      crossEntropyForward(store, losses, logits, targets);
    },
    crossEntropyBackward: (dlogits, logits, targets, gradScale, softcap) => {
      crossEntropyBackward(store, dlogits, logits, targets, gradScale, softcap);
    },
    quantize4bit: (packed, absmax, x, quantType, blocksize) => {
      quantize4bit(store, packed, absmax, x, quantType, blocksize);
    },
    dequantize4bit: (out, q) => {
      dequantize4bit(store, out, q);
    },
    adamwUpdate: (params, grads, m, v, p) => {
      adamwUpdate(store, params, grads, m, v, p);
    },
    sumSquares: (x) => Promise.resolve(sumSquares(store, x)),
  };
}
