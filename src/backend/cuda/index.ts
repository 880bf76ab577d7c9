// createCudaBackend: the backend contract on one NVIDIA GPU. Maps the public Tensor handles onto device
// storage (views share it), keeps a host copy of small i32 uploads (sequence boundaries size attention grids
// without a device sync), and dispatches each op to its wrapper in ops/ (kernels) or to cuBLASLt (matmul).
import type { Backend, DType, MatmulOptions, Tensor } from "../types.ts";
import { TunaError } from "../../util/errors.ts";
import { openCudaDevice } from "./device.ts";
import { attentionBackward, attentionDecode, attentionForward } from "./ops/attention.ts";
import { doraBackward, doraForward, rowNorms } from "./ops/dora.ts";
import { add, addBias, biasBackward, dropoutApply, dropoutMask, scale, softcap, swigluBackward, swigluForward } from "./ops/elementwise.ts";
import { embeddingBackward, embeddingForward } from "./ops/embedding.ts";
import { crossEntropyBackward, crossEntropyForward } from "./ops/loss.ts";
import { convert, fill } from "./ops/memory.ts";
import { rmsnormBackward, rmsnormForward } from "./ops/norm.ts";
import { adamwUpdate, sumSquares } from "./ops/optimizer.ts";
import { dequantize4bit, quantize4bit } from "./ops/quant.ts";
import { ropeBackward, ropeForward } from "./ops/rope.ts";
import { DTYPE_BYTES, type CudaDevice, type DeviceTensor, type MemoryStats } from "./types.ts";
import { numel } from "../../util/shape.ts";

/** i32 uploads up to this many elements keep a host copy (cu_seqlens, positions of small batches). */
const HOST_MIRROR_MAX = 1 << 16;

interface Storage {
  ptr: bigint;
  bytes: number;
  freed: boolean;
}

interface Record {
  storage: Storage;
  /** Byte offset of the first element inside the storage. */
  offset: number;
  /** Host copy of the contents (small i32 tensors uploaded from the host; dropped by any device write we cannot see). */
  hostI32: Int32Array | null;
  owner: boolean;
}

export interface CudaBackend extends Backend {
  readonly device: CudaDevice;
  /** The device address of a tensor's first element (for NCCL, which works on raw device memory). */
  pointerOf(t: Tensor): bigint;
  memoryStats(): MemoryStats;
  synchronize(): void;
  dispose(): void;
}

export interface CudaBackendOptions {
  index?: number;
  shareGpus?: boolean;
  kernelCacheDir?: string;
}

export function createCudaBackend(options: CudaBackendOptions = {}): CudaBackend {
  const dev = openCudaDevice(options);
  const records = new WeakMap<Tensor, Record>();
  let nextId = 1;

  const rec = (op: string, t: Tensor): Record => {
    const r = records.get(t);
    if (r === undefined) throw new TunaError("INTERNAL", `${op}: tensor "${t.name}" (#${t.id}) does not belong to this CUDA backend`);
    if (r.storage.freed) throw new TunaError("INTERNAL", `${op}: tensor "${t.name}" (#${t.id}) was freed`);
    return r;
  };
  const dt = (op: string, t: Tensor): DeviceTensor => {
    const r = rec(op, t);
    return { ptr: r.storage.ptr + BigInt(r.offset), dtype: t.dtype, shape: t.shape, size: t.size };
  };
  /** A device write the host mirror does not see. */
  const written = (t: Tensor): void => {
    const r = records.get(t);
    if (r !== undefined) r.hostI32 = null;
  };
  const make = (dtype: DType, shape: readonly number[], name: string, storage: Storage, offset: number, owner: boolean): Tensor => {
    const t: Tensor = { id: nextId++, dtype, shape: [...shape], size: numel(shape), name };
    records.set(t, { storage, offset, hostI32: null, owner });
    return t;
  };
  const scratch = (dtype: DType, shape: readonly number[], what: string): DeviceTensor => {
    const size = numel(shape);
    return { ptr: dev.alloc(Math.max(size * DTYPE_BYTES[dtype], 1), what), dtype, shape, size };
  };

  function matmul(out: Tensor, a: Tensor, b: Tensor, opts: MatmulOptions = {}): void {
    const transA = opts.transA ?? false;
    const transB = opts.transB ?? false;
    if (out.shape.length !== 2 || a.shape.length !== 2 || b.shape.length !== 2) {
      throw new TunaError("INTERNAL", `matmul: out, a and b must be 2-D (got ${out.shape.join("x")}, ${a.shape.join("x")}, ${b.shape.join("x")})`);
    }
    const [M, N] = out.shape as [number, number];
    const K = transA ? a.shape[0]! : a.shape[1]!;
    const aOk = transA ? a.shape[0] === K && a.shape[1] === M : a.shape[0] === M && a.shape[1] === K;
    const bOk = transB ? b.shape[0] === N && b.shape[1] === K : b.shape[0] === K && b.shape[1] === N;
    if (!aOk || !bOk) {
      throw new TunaError("INTERNAL", `matmul: shapes do not agree: out ${M}x${N}, a ${a.shape.join("x")}${transA ? "^T" : ""}, b ${b.shape.join("x")}${transB ? "^T" : ""}`);
    }
    for (const t of [out, a, b]) {
      if (t.dtype !== "f32" && t.dtype !== "bf16" && t.dtype !== "f16") throw new TunaError("INTERNAL", `matmul: "${t.name}" has dtype ${t.dtype}, not a float`);
    }
    // cuBLASLt takes A and B of one dtype and D of that dtype or f32: operands of another dtype are
    // converted into scratch first (LoRA's f32 A/B against bf16 activations: tiny matrices).
    const half = [a, b, out].find((t) => t.dtype !== "f32")?.dtype ?? "f32";
    const temps: DeviceTensor[] = [];
    const operand = (t: Tensor, what: string): DeviceTensor => {
      const d = dt("matmul", t);
      if (t.dtype === half) return d;
      const c = scratch(half, t.shape, `matmul ${what} in ${half}`);
      convert(dev, c, d);
      temps.push(c);
      return c;
    };
    const da = operand(a, "a");
    const db = operand(b, "b");
    let dd = dt("matmul", out);
    const direct = out.dtype === half || out.dtype === "f32";
    if (!direct) {
      dd = scratch("f32", out.shape, "matmul out in f32");
      if (opts.accumulate === true) convert(dev, dd, dt("matmul", out));
      temps.push(dd);
    }
    dev.gemm({ m: M, n: N, k: K, a: da, b: db, d: dd, transA, transB, alpha: opts.alpha ?? 1, beta: opts.accumulate === true ? 1 : 0 });
    if (!direct) convert(dev, dt("matmul", out), dd);
    for (const t of temps) dev.free(t.ptr);
    written(out);
  }

  const backend: CudaBackend = {
    name: "cuda",
    device: dev,
    pointerOf: (t) => dt("pointerOf", t).ptr,
    memoryStats: () => dev.memoryStats(),
    synchronize: () => {
      dev.synchronize();
    },
    dispose: () => {
      dev.dispose();
    },

    alloc(dtype, shape, name = "tensor") {
      const size = numel(shape);
      if (!Number.isSafeInteger(size) || size < 0) throw new TunaError("INTERNAL", `alloc "${name}": bad shape [${shape.join(", ")}]`);
      const bytes = Math.max(size * DTYPE_BYTES[dtype], 1);
      const storage: Storage = { ptr: dev.alloc(bytes, `${name} (${dtype} [${shape.join(", ")}])`), bytes, freed: false };
      return make(dtype, shape, name, storage, 0, true);
    },
    free(t) {
      const r = records.get(t);
      if (r === undefined || r.storage.freed) return;
      if (r.owner) {
        r.storage.freed = true;
        dev.free(r.storage.ptr);
      }
      records.delete(t);
    },
    upload(t, data) {
      const r = rec("upload", t);
      const bytes = t.size * DTYPE_BYTES[t.dtype];
      if (data.byteLength !== bytes) {
        throw new TunaError("INTERNAL", `upload "${t.name}": ${data.byteLength} bytes given for ${t.size} ${t.dtype} elements (${bytes} bytes)`);
      }
      dev.upload(r.storage.ptr + BigInt(r.offset), data);
      r.hostI32 = t.dtype === "i32" && t.size <= HOST_MIRROR_MAX ? Int32Array.from(data as Int32Array) : null;
    },
    download(t) {
      const r = rec("download", t);
      const out =
        t.dtype === "f32" ? new Float32Array(t.size) : t.dtype === "i32" ? new Int32Array(t.size) : t.dtype === "u8" ? new Uint8Array(t.size) : new Uint16Array(t.size);
      if (t.size > 0) dev.download(out, r.storage.ptr + BigInt(r.offset));
      return Promise.resolve(out);
    },
    async downloadF32(t) {
      if (t.dtype === "f32") return (await backend.download(t)) as Float32Array;
      if (t.dtype === "i32" || t.dtype === "u8") return Float32Array.from(await backend.download(t));
      const tmp = scratch("f32", t.shape, `downloadF32 of ${t.name}`);
      convert(dev, tmp, dt("downloadF32", t));
      const out = new Float32Array(t.size);
      if (t.size > 0) dev.download(out, tmp.ptr);
      dev.free(tmp.ptr);
      return out;
    },
    fill(t, value) {
      fill(dev, dt("fill", t), value);
      written(t);
    },
    copy(dst, src) {
      if (dst.size !== src.size) throw new TunaError("INTERNAL", `copy: "${src.name}" has ${src.size} elements, "${dst.name}" ${dst.size}`);
      if (dst.dtype === src.dtype) {
        dev.copy(dt("copy", dst).ptr, dt("copy", src).ptr, dst.size * DTYPE_BYTES[dst.dtype]);
        const mirror = records.get(src)?.hostI32 ?? null;
        rec("copy", dst).hostI32 = mirror === null ? null : Int32Array.from(mirror);
        return;
      }
      if (dst.dtype === "i32" || dst.dtype === "u8" || src.dtype === "i32" || src.dtype === "u8") {
        throw new TunaError("INTERNAL", `copy: integer tensors copy only to their own dtype ("${src.name}" ${src.dtype} -> "${dst.name}" ${dst.dtype})`);
      }
      convert(dev, dt("copy", dst), dt("copy", src));
      written(dst);
    },
    rows(t, start, count) {
      const r = rec("rows", t);
      const first = t.shape[0];
      if (first === undefined || !Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > first) {
        throw new TunaError("INTERNAL", `rows: [${start}, ${start + count}) is not inside "${t.name}" of shape [${t.shape.join(", ")}]`);
      }
      const rowElems = first === 0 ? 0 : t.size / first;
      const view = make(t.dtype, [count, ...t.shape.slice(1)], t.name, r.storage, r.offset + start * rowElems * DTYPE_BYTES[t.dtype], false);
      const mirror = r.hostI32;
      if (mirror !== null) rec("rows", view).hostI32 = mirror.subarray(start * rowElems, (start + count) * rowElems);
      return view;
    },
    view(t, shape) {
      const r = rec("view", t);
      if (numel(shape) !== t.size) throw new TunaError("INTERNAL", `view: "${t.name}" has ${t.size} elements, shape [${shape.join(", ")}] has ${numel(shape)}`);
      const v = make(t.dtype, shape, t.name, r.storage, r.offset, false);
      rec("view", v).hostI32 = r.hostI32;
      return v;
    },

    embeddingForward(out, ids, table) {
      embeddingForward(dev, dt("embeddingForward", out), dt("embeddingForward", ids), dt("embeddingForward", table));
    },
    embeddingBackward(dtable, dout, ids) {
      embeddingBackward(dev, dt("embeddingBackward", dtable), dt("embeddingBackward", dout), dt("embeddingBackward", ids));
    },
    matmul,
    addBias(out, bias) {
      addBias(dev, dt("addBias", out), dt("addBias", bias));
    },
    biasBackward(dbias, dout) {
      biasBackward(dev, dt("biasBackward", dbias), dt("biasBackward", dout));
    },
    rowNorms(norms, x) {
      rowNorms(dev, dt("rowNorms", norms), dt("rowNorms", x));
    },
    doraForward(y, base, lora, magnitude, norms) {
      const op = "doraForward";
      doraForward(dev, dt(op, y), dt(op, base), dt(op, lora), dt(op, magnitude), dt(op, norms));
    },
    doraBackward(dmagnitude, dlora, dbase, dy, base, lora, magnitude, norms) {
      const op = "doraBackward";
      doraBackward(dev, dt(op, dmagnitude), dt(op, dlora), dbase === null ? null : dt(op, dbase), dt(op, dy), dt(op, base), dt(op, lora), dt(op, magnitude), dt(op, norms));
    },
    rmsnormForward(out, rstd, x, weight, eps, options) {
      rmsnormForward(dev, dt("rmsnormForward", out), dt("rmsnormForward", rstd), dt("rmsnormForward", x), dt("rmsnormForward", weight), eps, options);
    },
    rmsnormBackward(dx, dweight, dout, x, weight, rstd, accumulate, options) {
      const op = "rmsnormBackward";
      rmsnormBackward(dev, dt(op, dx), dweight === null ? null : dt(op, dweight), dt(op, dout), dt(op, x), dt(op, weight), dt(op, rstd), accumulate, options);
    },
    ropeForward(x, positions, invFreq) {
      ropeForward(dev, dt("ropeForward", x), dt("ropeForward", positions), dt("ropeForward", invFreq));
    },
    ropeBackward(dx, positions, invFreq) {
      ropeBackward(dev, dt("ropeBackward", dx), dt("ropeBackward", positions), dt("ropeBackward", invFreq));
    },
    attentionForward(out, lse, q, k, v, cuSeqlens, s, options) {
      const op = "attentionForward";
      attentionForward(dev, dt(op, out), dt(op, lse), dt(op, q), dt(op, k), dt(op, v), dt(op, cuSeqlens), hostSeqlens(cuSeqlens), s, options);
    },
    attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, cuSeqlens, s, options) {
      const op = "attentionBackward";
      attentionBackward(
        dev,
        dt(op, dq),
        dt(op, dk),
        dt(op, dv),
        dt(op, dout),
        dt(op, q),
        dt(op, k),
        dt(op, v),
        dt(op, out),
        dt(op, lse),
        dt(op, cuSeqlens),
        hostSeqlens(cuSeqlens),
        s,
        options,
      );
    },
    attentionDecode(out, q, kCache, vCache, pastLength, s, options) {
      const op = "attentionDecode";
      attentionDecode(dev, dt(op, out), dt(op, q), dt(op, kCache), dt(op, vCache), pastLength, s, options);
    },
    swigluForward(out, gate, up, activation) {
      swigluForward(dev, dt("swigluForward", out), dt("swigluForward", gate), dt("swigluForward", up), activation);
    },
    swigluBackward(dgate, dup, dout, gate, up, activation) {
      const op = "swigluBackward";
      swigluBackward(dev, dt(op, dgate), dt(op, dup), dt(op, dout), dt(op, gate), dt(op, up), activation);
    },
    softcap(x, cap) {
      softcap(dev, dt("softcap", x), cap);
    },
    add(out, a, b) {
      add(dev, dt("add", out), dt("add", a), dt("add", b));
      written(out);
    },
    scale(x, s) {
      scale(dev, dt("scale", x), s);
      written(x);
    },
    dropoutMask(mask, p, seed) {
      dropoutMask(dev, dt("dropoutMask", mask), p, seed);
    },
    dropoutApply(out, x, mask, p) {
      dropoutApply(dev, dt("dropoutApply", out), dt("dropoutApply", x), dt("dropoutApply", mask), p);
    },
    crossEntropyForward(losses, logits, targets) {
      crossEntropyForward(dev, dt("crossEntropyForward", losses), dt("crossEntropyForward", logits), dt("crossEntropyForward", targets));
    },
    crossEntropyBackward(dlogits, logits, targets, gradScale, softcap) {
      const op = "crossEntropyBackward";
      crossEntropyBackward(dev, dt(op, dlogits), dt(op, logits), dt(op, targets), gradScale, softcap);
    },
    quantize4bit(packed, absmax, x, quantType, blocksize) {
      const op = "quantize4bit";
      quantize4bit(dev, dt(op, packed), dt(op, absmax), dt(op, x), quantType, blocksize);
    },
    dequantize4bit(out, q) {
      const op = "dequantize4bit";
      dequantize4bit(dev, dt(op, out), { packed: dt(op, q.packed), absmax: dt(op, q.absmax), code: dt(op, q.code), blocksize: q.blocksize });
    },
    adamwUpdate(params, grads, m, v, p) {
      adamwUpdate(dev, dt("adamwUpdate", params), dt("adamwUpdate", grads), dt("adamwUpdate", m), dt("adamwUpdate", v), p);
    },
    async sumSquares(x) {
      return sumSquares(dev, dt("sumSquares", x));
    },
  };

  /** The host copy of cu_seqlens (uploaded from the host), or a synchronous download when there is none. */
  function hostSeqlens(t: Tensor): Int32Array {
    const r = rec("attention", t);
    if (t.dtype !== "i32") throw new TunaError("INTERNAL", `attention: cuSeqlens "${t.name}" must be i32, not ${t.dtype}`);
    if (r.hostI32 !== null) return r.hostI32;
    const out = new Int32Array(t.size);
    dev.download(out, r.storage.ptr + BigInt(r.offset));
    r.hostI32 = out;
    return out;
  }

  return backend;
}
