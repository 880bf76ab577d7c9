// Quantizing a model's weights at load, one tensor at a time: the decoder blocks' q/k/v/o/gate/up/down
// `.weight` (expectedWeights marks them quantizable) to bnb 4-bit, or to LLM.int8 for load_in_8bit.
import { TunaError } from "../util/errors.ts";
import { bf16ToF32Array, f16ToF32Array } from "../util/half.ts";
import type { WeightSource } from "../io/safetensors/checkpoint.ts";
import type { SafetensorsDtype } from "../io/safetensors/dtypes.ts";
import type { ModelConfig } from "../hf/config.ts";
import { expectedWeights, type ExpectedWeight } from "../hf/weights.ts";
import { BLOCKSIZES, DEFAULT_BLOCKSIZE_4BIT, allocate4bit, isBlocksize, quantizeBlocks4bit } from "./blockwise.ts";
import { quantMap4bit, type QuantType4bit } from "./codes.ts";
import { doubleQuantizeAbsmax } from "./double-quant.ts";
import type { Quantized4bit } from "./bnb-checkpoint.ts";
import { packedStorageShape, weightDtypeName, type QuantStorage, type WeightDtypeName } from "./quant-state.ts";
import { quantizeInt8Rowwise, type QuantizedInt8 } from "./int8.ts";
import { numel } from "../util/shape.ts";

export interface Quantize4bitOptions {
  quantType: QuantType4bit;
  /** bnb_4bit_use_double_quant. */
  doubleQuant: boolean;
  /** Default 64, what transformers always uses. */
  blocksize?: number;
  /** bnb_4bit_quant_storage of the result (default "uint8"); only matters when it is saved. */
  storage?: QuantStorage;
}

// Elements converted to float32 at a time for 16-bit weights: 256 KiB of scratch, whole blocks.
const CHUNK_ELEMENTS = 65536;

function itemsizeOf(dtype: SafetensorsDtype): number {
  return dtype === "F32" ? 4 : dtype === "BF16" || dtype === "F16" ? 2 : 0;
}

/**
 * Checks that `bytes` hold a whole F32, BF16 or F16 weight of `shape` (bitsandbytes quantizes nothing else);
 * returns its element count and the dtype name quant_state records.
 */
export function expectQuantizableBytes(
  bytes: Uint8Array,
  dtype: SafetensorsDtype,
  shape: readonly number[],
  where: string,
): { n: number; weightDtype: WeightDtypeName } {
  const weightDtype = weightDtypeName(dtype);
  if (weightDtype === undefined) throw new TunaError("MODEL_INVALID", `${where} is ${dtype}; bitsandbytes quantizes only F32, BF16 or F16 weights.`);
  const n = numel(shape);
  const itemsize = itemsizeOf(dtype);
  if (bytes.byteLength !== n * itemsize) {
    throw new TunaError("MODEL_INVALID", `${where} holds ${bytes.byteLength} bytes, not the ${n * itemsize} of ${dtype} [${shape.join(", ")}].`);
  }
  return { n, weightDtype };
}

/**
 * bnb quantize_4bit of one weight from its raw safetensors bytes (F32, BF16 or F16, row-major).
 * 16-bit weights are widened a chunk at a time, so memory beyond the input is the packed result.
 */
export function quantizeTensor4bit(
  bytes: Uint8Array,
  dtype: SafetensorsDtype,
  shape: readonly number[],
  options: Quantize4bitOptions,
  where: string,
): Quantized4bit {
  const { n, weightDtype } = expectQuantizableBytes(bytes, dtype, shape, where);
  const blocksize = options.blocksize ?? DEFAULT_BLOCKSIZE_4BIT;
  const out = allocate4bit(n, blocksize);
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  if (dtype === "F32") {
    quantizeBlocks4bit(new Float32Array(aligned.buffer, aligned.byteOffset, n), n, blocksize, options.quantType, out, 0, 0);
  } else {
    const chunk = Math.max(blocksize, CHUNK_ELEMENTS - (CHUNK_ELEMENTS % blocksize));
    const scratch = new Float32Array(chunk);
    for (let c0 = 0; c0 < n; c0 += chunk) {
      const len = Math.min(chunk, n - c0);
      const src = new Uint16Array(aligned.buffer, aligned.byteOffset + c0 * 2, len);
      if (dtype === "BF16") bf16ToF32Array(src, scratch);
      else f16ToF32Array(src, scratch);
      quantizeBlocks4bit(scratch, len, blocksize, options.quantType, out, c0 / 2, c0 / blocksize);
    }
  }
  return {
    quantType: options.quantType,
    blocksize,
    shape: [...shape],
    dtype: weightDtype,
    storage: options.storage ?? "uint8",
    packed: out.packed,
    absmax: options.doubleQuant ? doubleQuantizeAbsmax(out.absmax) : out.absmax,
    // bnb stores a fresh quant_map per tensor; a copy keeps callers from aliasing the shared table.
    code: quantMap4bit(options.quantType).slice(),
  };
}

/** The weights bnb replaces: every nn.Linear weight inside the decoder blocks. */
export function quantizableWeights(cfg: ModelConfig): ExpectedWeight[] {
  return expectedWeights(cfg).filter((w) => w.quantizable);
}

export interface QuantizeProgress {
  name: string;
  /** 0-based position among the `total` quantizable weights. */
  index: number;
  total: number;
}

interface RawWeight {
  name: string;
  shape: number[];
  dtype: SafetensorsDtype;
  bytes: Uint8Array;
  where: string;
}

/** Checks every target's presence, dtype and shape up front, then reads them one at a time. */
async function* readQuantizable(source: WeightSource, cfg: ModelConfig): AsyncGenerator<RawWeight> {
  const targets = quantizableWeights(cfg);
  for (const w of targets) {
    const where = `${source.dir}: "${w.name}"`;
    if (!source.has(w.name)) throw new TunaError("MODEL_INVALID", `${where} is missing; the checkpoint does not match config.json.`);
    const info = source.info(w.name);
    if (info.shape.length !== w.shape.length || info.shape.some((d, i) => d !== w.shape[i])) {
      throw new TunaError("MODEL_INVALID", `${where} has shape [${info.shape.join(", ")}] but config.json implies [${w.shape.join(", ")}].`);
    }
    if (itemsizeOf(info.dtype) === 0) throw new TunaError("MODEL_INVALID", `${where} is ${info.dtype}; only F32, BF16 or F16 weights can be quantized.`);
  }
  for (const w of targets) {
    const info = source.info(w.name);
    yield { name: w.name, shape: w.shape, dtype: info.dtype, bytes: await source.readTensor(w.name), where: `${source.dir}: "${w.name}"` };
  }
}

/**
 * Quantizes the model's linear weights to bnb 4-bit at load, yielding each one as soon as it is
 * done. One source tensor is read at a time, so peak memory is the 4-bit weights plus about one
 * layer. `onTensor` reports progress after each weight.
 */
export async function* quantizeLinearWeights(
  source: WeightSource,
  cfg: ModelConfig,
  options: Quantize4bitOptions,
  onTensor?: (progress: QuantizeProgress) => void,
): AsyncGenerator<{ name: string; quantized: Quantized4bit }> {
  const blocksize = options.blocksize ?? DEFAULT_BLOCKSIZE_4BIT;
  if (!isBlocksize(blocksize)) {
    throw new TunaError("CONFIG_INVALID", `4-bit blocksize ${blocksize} is not one bitsandbytes supports; use one of ${BLOCKSIZES.join(", ")}.`);
  }
  const storage = options.storage ?? "uint8";
  const targets = quantizableWeights(cfg);
  for (const w of targets) {
    if (packedStorageShape(numel(w.shape), storage) === undefined) {
      throw new TunaError(
        "CONFIG_INVALID",
        `bnb_4bit_quant_storage "${storage}" cannot hold the packed bytes of "${w.name}" [${w.shape.join(", ")}] whole; use "uint8".`,
      );
    }
  }
  const total = targets.length;
  let index = 0;
  for await (const raw of readQuantizable(source, cfg)) {
    const quantized = quantizeTensor4bit(raw.bytes, raw.dtype, raw.shape, { ...options, blocksize, storage }, raw.where);
    onTensor?.({ name: raw.name, index, total });
    index++;
    yield { name: raw.name, quantized };
  }
}

/** The load_in_8bit counterpart: LLM.int8 row-wise codes for each linear weight, one tensor at a time. */
export async function* quantizeLinearWeightsInt8(
  source: WeightSource,
  cfg: ModelConfig,
  onTensor?: (progress: QuantizeProgress) => void,
): AsyncGenerator<{ name: string; quantized: QuantizedInt8 }> {
  const total = quantizableWeights(cfg).length;
  let index = 0;
  for await (const raw of readQuantizable(source, cfg)) {
    const [rows = 0, cols = 0] = raw.shape;
    const quantized = quantizeInt8Rowwise(raw.bytes, raw.dtype, rows, cols, raw.where);
    onTensor?.({ name: raw.name, index, total });
    index++;
    yield { name: raw.name, quantized };
  }
}
