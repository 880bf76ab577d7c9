// The backend contract: tensors as opaque handles a backend owns, copies in and out, and one
// forward/backward function pair per op. The CPU backend is its living definition; CUDA implements it.
//
// Dimension letters (STYLE.md): B batch, T tokens, N = tokens in a flat batch (B*T or packed),
// C channels, V vocab, L layers, H heads, KV kv heads, D head dim, F ffn, R rank, S sequences.
// Layouts are row-major. Activations are (N, ...) with N the flattened token axis.
//
// Numerics: every op accumulates in at least f32 (the CPU reference uses f64 and rounds each output
// once); outputs are rounded to their storage dtype with round-to-nearest-even. A faster backend is
// checked against the CPU reference with a tolerance per dtype.
// Aliasing: an output may be the very same tensor as an input only where a doc comment says so
// (add, scale, dropoutApply, swigluForward, crossEntropyBackward over the logits); any other
// overlap is a caller bug and the CPU backend throws on it.

export type DType = "f32" | "bf16" | "f16" | "i32" | "u8";

/** Element size in bytes of each dtype. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = { f32: 4, bf16: 2, f16: 2, i32: 4, u8: 1 };

/** Typed array a dtype is copied in and out as (bf16/f16 travel as raw 16-bit patterns). */
export type HostArray<D extends DType> = D extends "f32"
  ? Float32Array
  : D extends "i32"
    ? Int32Array
    : D extends "u8"
      ? Uint8Array
      : Uint16Array;

export interface Tensor {
  readonly id: number;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** Number of elements. */
  readonly size: number;
  readonly name: string;
}

export interface MatmulOptions {
  /** Use a transposed: a is stored (K, M) and read as (M, K). */
  transA?: boolean;
  /** Use b transposed: b is stored (N, K) and read as (K, N) — the nn.Linear case x @ W^T. */
  transB?: boolean;
  /** out = alpha * op(a) @ op(b) (+ out when accumulate). Default 1. */
  alpha?: number;
  /** Add into out instead of overwriting (beta = 1). */
  accumulate?: boolean;
}

export interface AdamWParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step count, for bias correction. */
  step: number;
}

/** 4-bit blockwise weight as bitsandbytes stores it (absmax already dequantized to f32 per block). */
export interface Quant4bitTensors {
  /** u8 (ceil(n/2)): two codes per byte, element 2j in the high nibble. */
  packed: Tensor;
  /** f32 (ceil(n/blocksize)). */
  absmax: Tensor;
  /** f32 (16): the code table (NF4 or FP4). */
  code: Tensor;
  blocksize: number;
}

/** How far back attention reaches (every attention op takes it; absent fields keep full causal attention). */
export interface AttentionOptions {
  /**
   * Sliding window (HF sliding_window): the query at position i attends keys at positions j with
   * i - window < j <= i, i.e. itself and the window - 1 before it. A positive integer; absent = no window.
   */
  window?: number;
  /**
   * Score soft-capping (Gemma 2's attn_logit_softcapping): each scaled score s becomes cap * tanh(s / cap)
   * before the mask and softmax. A positive number; absent = none.
   */
  softcap?: number;
}

/** Gemma's RMSNorm: the weight w is applied as (1 + w), in f32 with the normalized value (no cast between). */
export interface RmsnormOptions {
  plusOne?: boolean;
}

/** The activation of the gated MLP: silu (SwiGLU; Llama, Qwen, Mistral) or tanh-approximated GELU (GeGLU; Gemma). */
export type GatedActivation = "silu" | "gelu_tanh";

export interface Backend {
  readonly name: "cpu" | "cuda";

  // ---- memory ----
  alloc(dtype: DType, shape: readonly number[], name?: string): Tensor;
  free(t: Tensor): void;
  upload(t: Tensor, data: Float32Array | Int32Array | Uint8Array | Uint16Array): void;
  /** Copies out in storage form (bf16/f16 as Uint16Array). */
  download(t: Tensor): Promise<Float32Array | Int32Array | Uint8Array | Uint16Array>;
  /** Copies out converted to float32 (for checks and logging). */
  downloadF32(t: Tensor): Promise<Float32Array>;
  fill(t: Tensor, value: number): void;
  copy(dst: Tensor, src: Tensor): void;
  /** A view of rows [start, start+count) of a tensor's first axis, sharing storage. */
  rows(t: Tensor, start: number, count: number): Tensor;
  /** The same storage with another shape of equal size. */
  view(t: Tensor, shape: readonly number[]): Tensor;

  // ---- ops (forward / backward pairs) ----
  /** out (N, C) = table[ids] ; ids i32 (N) each in [0, V), table (V, C). */
  embeddingForward(out: Tensor, ids: Tensor, table: Tensor): void;
  /** dtable (V, C) += scatter of dout (N, C) by ids; rows with id < 0 are skipped. */
  embeddingBackward(dtable: Tensor, dout: Tensor, ids: Tensor): void;

  /** out (M, N) = alpha * op(a) (M, K) @ op(b) (K, N) [+ out]. */
  matmul(out: Tensor, a: Tensor, b: Tensor, options?: MatmulOptions): void;
  /** out (N, F) += bias (F) broadcast over rows. */
  addBias(out: Tensor, bias: Tensor): void;
  /** dbias (F) += column sums of dout (N, F). */
  biasBackward(dbias: Tensor, dout: Tensor): void;

  /**
   * out (N, C) = x / rms(x) * weight ; rstd f32 (N) saved for backward. HF Llama's order: normalize in f32, cast,
   * then scale. With plusOne, Gemma's: out = x / rms(x) * (1 + weight), all in f32, cast once.
   */
  rmsnormForward(out: Tensor, rstd: Tensor, x: Tensor, weight: Tensor, eps: number, options?: RmsnormOptions): void;
  /** dx (N, C) = (or += when accumulate) ; dweight (C) += when given. */
  rmsnormBackward(dx: Tensor, dweight: Tensor | null, dout: Tensor, x: Tensor, weight: Tensor, rstd: Tensor, accumulate: boolean, options?: RmsnormOptions): void;

  /**
   * In-place rotary embedding on x (N, heads, D), half-split pairing (j with j + D/2) as HF's
   * rotate_half. positions i32 (N) restart per packed document; invFreq f32 (D/2).
   */
  ropeForward(x: Tensor, positions: Tensor, invFreq: Tensor): void;
  /** In-place inverse rotation of a gradient (N, heads, D). */
  ropeBackward(dx: Tensor, positions: Tensor, invFreq: Tensor): void;

  /**
   * Causal grouped-query attention over packed variable-length sequences.
   * q (N, H, D), k/v (N, KV, D), cuSeqlens i32 (S+1) document boundaries (no attention across them).
   * out (N, H, D); lse f32 (N, H) log-sum-exp of the scaled scores, saved for backward.
   */
  attentionForward(out: Tensor, lse: Tensor, q: Tensor, k: Tensor, v: Tensor, cuSeqlens: Tensor, scale: number, options?: AttentionOptions): void;
  /** dq (N, H, D), dk/dv (N, KV, D) overwritten. */
  attentionBackward(
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    cuSeqlens: Tensor,
    scale: number,
    options?: AttentionOptions,
  ): void;

  /**
   * Attention of Q new tokens against a KV cache (incremental decoding; no backward). q (Q, H, D);
   * kCache/vCache (Tmax, KV, D) already hold the new tokens' keys and values at rows pastLength..
   * pastLength+Q-1. Query i sits at position pastLength + i and attends causally to cache rows
   * [0, pastLength + i] (with a window, the last `window` of them); rows beyond pastLength + Q - 1 are not read. out (Q, H, D).
   */
  attentionDecode(out: Tensor, q: Tensor, kCache: Tensor, vCache: Tensor, pastLength: number, scale: number, options?: AttentionOptions): void;

  /** out (N, F) = act(gate) * up, act silu (default) or gelu_tanh: 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))). */
  swigluForward(out: Tensor, gate: Tensor, up: Tensor, activation?: GatedActivation): void;
  /** dgate, dup (N, F) overwritten. */
  swigluBackward(dgate: Tensor, dup: Tensor, dout: Tensor, gate: Tensor, up: Tensor, activation?: GatedActivation): void;
  /** x = cap * tanh(x / cap) in place (Gemma 2's final_logit_softcapping on logits). */
  softcap(x: Tensor, cap: number): void;

  /** out = a + b (same shape); out may alias a or b. */
  add(out: Tensor, a: Tensor, b: Tensor): void;
  /** x *= s. */
  scale(x: Tensor, s: number): void;
  /**
   * mask u8 = 1 (keep) where the 24 top bits of dropoutHash(i, seed) (src/util/dropout-hash.ts) reach
   * dropoutThreshold(p), else 0: the same mask on every backend for the same seed, drawn on the device.
   */
  dropoutMask(mask: Tensor, p: number, seed: readonly [number, number]): void;
  /** out = x * mask / (1 - p) with mask u8 (same shape) 1 = keep; p = 0 copies. */
  dropoutApply(out: Tensor, x: Tensor, mask: Tensor, p: number): void;

  /** norms (R, any float dtype) = the L2 norm of each row of x (R, C), summed in at least f32 and rounded once. */
  rowNorms(norms: Tensor, x: Tensor): void;
  /**
   * DoRA's output (PEFT DoraLinearLayer.forward) with g = magnitude / norms per column (F):
   * y (N, F) += (g - 1) * base + g * lora. y may be exactly base. magnitude and norms (F), any float dtype.
   */
  doraForward(y: Tensor, base: Tensor, lora: Tensor, magnitude: Tensor, norms: Tensor): void;
  /**
   * DoRA's backward with g = magnitude / norms (norms detached, as PEFT does): dmagnitude (F) += column sums of
   * dy * (base + lora) / norms; dlora = g * dy; dbase = (g - 1) * dy when given. dlora may be exactly lora,
   * dbase exactly base (each element is read before it is written).
   */
  doraBackward(dmagnitude: Tensor, dlora: Tensor, dbase: Tensor | null, dy: Tensor, base: Tensor, lora: Tensor, magnitude: Tensor, norms: Tensor): void;

  /**
   * Token losses of logits (N, V) against targets i32 (N); target -100 gives loss 0 and no gradient.
   * losses f32 (N). Returns nothing: callers reduce (token-mean over trained tokens).
   */
  crossEntropyForward(losses: Tensor, logits: Tensor, targets: Tensor): void;
  /**
   * dlogits (N, V) = (softmax(logits) - onehot(target)) * gradScale, zero rows for ignored targets. dlogits may be
   * logits itself. With `softcap`, logits hold capped values y = cap * tanh(x / cap) and dlogits is the gradient
   * with respect to the raw x: times (1 - (y / cap)^2).
   */
  crossEntropyBackward(dlogits: Tensor, logits: Tensor, targets: Tensor, gradScale: number, softcap?: number): void;

  /**
   * bitsandbytes quantize_4bit of x (n elements, any float dtype, read as float32) into packed u8
   * (ceil(n/2), element 2j in the high nibble) and absmax f32 (ceil(n/blocksize)): the block's max |x|
   * (NaN skipped), codes from float32(x * float32(1 / absmax)) by the NF4/FP4 trees (src/quant).
   */
  quantize4bit(packed: Tensor, absmax: Tensor, x: Tensor, quantType: "nf4" | "fp4", blocksize: number): void;
  /** out (n) = dequantized 4-bit weight (f32 multiply code[nibble] * absmax[i / blocksize]). */
  dequantize4bit(out: Tensor, q: Quant4bitTensors): void;

  /** Decoupled-weight-decay Adam (PyTorch AdamW) over flat f32 buffers of equal size. */
  adamwUpdate(params: Tensor, grads: Tensor, m: Tensor, v: Tensor, p: AdamWParams): void;
  /** Sum of squares of x (accumulated in f64 on CPU), for gradient-norm clipping. */
  sumSquares(x: Tensor): Promise<number>;

  /** Device memory accounting (GPU backends; absent on the CPU): bytes in use now and at peak. */
  memoryStats?(): DeviceMemoryStats;
}

export interface DeviceMemoryStats {
  inUseBytes: number;
  peakInUseBytes: number;
  /** Held from the driver: in use plus cached free blocks. */
  reservedBytes: number;
  totalBytes: number;
}
