// The step-time breakdown: a Backend that forwards every call to the real one and times each op
// (CUDA events around it, so one synchronization per op) into a few categories; the rest of the step is host time.
import { performance } from "node:perf_hooks";
import type { Backend } from "../../../src/backend/types.ts";
import type { BenchDevice } from "./device.ts";

export const OP_CATEGORIES = ["matmul", "attention fwd", "attention bwd", "dequantize4bit", "cross-entropy", "other ops"] as const;
export type OpCategory = (typeof OP_CATEGORIES)[number];
/** Wall time of the step not inside any timed op: JS, kernel launches outside ops, synchronization waits. */
export const HOST = "host and sync";

export interface CategoryTime {
  name: OpCategory | typeof HOST;
  ms: number;
  /** Fraction of the profiled step's wall time; the categories sum to 1. */
  share: number;
  ops: number;
}

export interface Breakdown {
  /** Wall time of the profiled step (slower than an unprofiled one: every op synchronizes). */
  stepMs: number;
  categories: CategoryTime[];
  /** Wall time of the step's phases: zero grads + upload + forward, backward, clip + AdamW. */
  phases: { forwardMs: number; backwardMs: number; optimizerMs: number };
}

export interface OpTimer {
  readonly backend: Backend;
  /** Time and count per category since the last reset. */
  totals(): Map<OpCategory, { ms: number; ops: number }>;
  reset(): void;
}

/** Wraps device.backend; ops that only touch host bookkeeping (alloc, free, rows, view) are not timed. */
export function profilingBackend(device: BenchDevice): OpTimer {
  const be = device.backend;
  const totals = new Map<OpCategory, { ms: number; ops: number }>();
  const add = (cat: OpCategory, ms: number): void => {
    const t = totals.get(cat) ?? { ms: 0, ops: 0 };
    t.ms += ms;
    t.ops += 1;
    totals.set(cat, t);
  };
  const timed = (cat: OpCategory, body: () => void): void => {
    add(cat, device.timeOp(body));
  };
  // Copies out wait for the device anyway: their wall time after a synchronize is their cost.
  const timedAsync = async <T>(cat: OpCategory, body: () => Promise<T>): Promise<T> => {
    device.synchronize();
    const t0 = performance.now();
    const out = await body();
    add(cat, performance.now() - t0);
    return out;
  };
  const backend: Backend = {
    name: be.name,
    alloc: (dtype, shape, name) => be.alloc(dtype, shape, name),
    free: (t) => {
      be.free(t);
    },
    upload: (t, data) => {
      timed("other ops", () => {
        be.upload(t, data);
      });
    },
    download: (t) => timedAsync("other ops", () => be.download(t)),
    downloadF32: (t) => timedAsync("other ops", () => be.downloadF32(t)),
    fill: (t, value) => {
      timed("other ops", () => {
        be.fill(t, value);
      });
    },
    copy: (dst, src) => {
      timed("other ops", () => {
        be.copy(dst, src);
      });
    },
    rows: (t, start, count) => be.rows(t, start, count),
    view: (t, shape) => be.view(t, shape),
    embeddingForward: (out, ids, table) => {
      timed("other ops", () => {
        be.embeddingForward(out, ids, table);
      });
    },
    embeddingBackward: (dtable, dout, ids) => {
      timed("other ops", () => {
        be.embeddingBackward(dtable, dout, ids);
      });
    },
    matmul: (out, a, b, options) => {
      timed("matmul", () => {
        be.matmul(out, a, b, options);
      });
    },
    addBias: (out, bias) => {
      timed("other ops", () => {
        be.addBias(out, bias);
      });
    },
    biasBackward: (dbias, dout) => {
      timed("other ops", () => {
        be.biasBackward(dbias, dout);
      });
    },
    softcap: (x, cap) => {
      timed("other ops", () => {
        be.softcap(x, cap);
      });
    },
    rowNorms: (norms, x) => {
      timed("other ops", () => {
        be.rowNorms(norms, x);
      });
    },
    doraForward: (y, base, lora, magnitude, norms) => {
      timed("other ops", () => {
        be.doraForward(y, base, lora, magnitude, norms);
      });
    },
    doraBackward: (dmagnitude, dlora, dbase, dy, base, lora, magnitude, norms) => {
      timed("other ops", () => {
        be.doraBackward(dmagnitude, dlora, dbase, dy, base, lora, magnitude, norms);
      });
    },
    rmsnormForward: (out, rstd, x, weight, eps, options) => {
      timed("other ops", () => {
        be.rmsnormForward(out, rstd, x, weight, eps, options);
      });
    },
    rmsnormBackward: (dx, dweight, dout, x, weight, rstd, accumulate, options) => {
      timed("other ops", () => {
        be.rmsnormBackward(dx, dweight, dout, x, weight, rstd, accumulate, options);
      });
    },
    ropeForward: (x, positions, invFreq) => {
      timed("other ops", () => {
        be.ropeForward(x, positions, invFreq);
      });
    },
    ropeBackward: (dx, positions, invFreq) => {
      timed("other ops", () => {
        be.ropeBackward(dx, positions, invFreq);
      });
    },
    attentionForward: (out, lse, q, k, v, cuSeqlens, scale, options) => {
      timed("attention fwd", () => {
        be.attentionForward(out, lse, q, k, v, cuSeqlens, scale, options);
      });
    },
    attentionBackward: (dq, dk, dv, dout, q, k, v, out, lse, cuSeqlens, scale, options) => {
      timed("attention bwd", () => {
        be.attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, cuSeqlens, scale, options);
      });
    },
    attentionDecode: (out, q, kCache, vCache, pastLength, scale, options) => {
      timed("other ops", () => {
        be.attentionDecode(out, q, kCache, vCache, pastLength, scale, options);
      });
    },
    swigluForward: (out, gate, up, activation) => {
      timed("other ops", () => {
        be.swigluForward(out, gate, up, activation);
      });
    },
    swigluBackward: (dgate, dup, dout, gate, up, activation) => {
      timed("other ops", () => {
        be.swigluBackward(dgate, dup, dout, gate, up, activation);
      });
    },
    add: (out, a, b) => {
      timed("other ops", () => {
        be.add(out, a, b);
      });
    },
    scale: (x, s) => {
      timed("other ops", () => {
        be.scale(x, s);
      });
    },
    quantize4bit: (packed, absmax, x, quantType, blocksize) => {
      timed("other ops", () => {
        be.quantize4bit(packed, absmax, x, quantType, blocksize);
      });
    },
    dropoutMask: (mask, p, seed) => {
      timed("other ops", () => {
        be.dropoutMask(mask, p, seed);
      });
    },
    dropoutApply: (out, x, mask, p) => {
      timed("other ops", () => {
        be.dropoutApply(out, x, mask, p);
      });
    },
    crossEntropyForward: (losses, logits, targets) => {
      timed("cross-entropy", () => {
        be.crossEntropyForward(losses, logits, targets);
      });
    },
    crossEntropyBackward: (dlogits, logits, targets, gradScale, softcap) => {
      timed("cross-entropy", () => {
        be.crossEntropyBackward(dlogits, logits, targets, gradScale, softcap);
      });
    },
    dequantize4bit: (out, q) => {
      timed("dequantize4bit", () => {
        be.dequantize4bit(out, q);
      });
    },
    adamwUpdate: (params, grads, m, v, p) => {
      timed("other ops", () => {
        be.adamwUpdate(params, grads, m, v, p);
      });
    },
    sumSquares: (x) => timedAsync("other ops", () => be.sumSquares(x)),
  };
  return {
    backend,
    totals: () => new Map(totals),
    reset: () => {
      totals.clear();
    },
  };
}

/** Categories with their share of `stepMs`; whatever no op accounts for is host time. */
export function breakdownOf(totals: ReadonlyMap<OpCategory, { ms: number; ops: number }>, stepMs: number, phases: Breakdown["phases"]): Breakdown {
  const rows: Omit<CategoryTime, "share">[] = OP_CATEGORIES.map((name) => ({ name, ms: totals.get(name)?.ms ?? 0, ops: totals.get(name)?.ops ?? 0 }));
  const opMs = rows.reduce((s, r) => s + r.ms, 0);
  rows.push({ name: HOST, ms: Math.max(0, stepMs - opMs), ops: 0 });
  // Event timing can exceed the wall clock by a few microseconds per op; shares then divide by the op sum.
  const whole = Math.max(stepMs, opMs);
  return { stepMs, categories: rows.map((r) => ({ ...r, share: whole > 0 ? r.ms / whole : 0 })), phases };
}
