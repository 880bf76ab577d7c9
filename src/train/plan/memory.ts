// Predicted peak device memory of one training rank, part by part, from the model's shape and the run's
// settings: what tuna allocates, counted as the code allocates it. The activations are counted by running the
// model's own allocator (allocActivations) on a backend that only counts bytes, so they cannot drift from the
// model code; the rest follows the loader, the model and the optimizer tensor by tensor (test/train/plan
// checks the total against the CPU backend's exact count for a grid of settings). On CUDA every tensor is
// rounded as the caching allocator rounds it. What no tensor holds (the CUDA context, library workspaces) is
// the `runtime` part, given by the caller.
import { DTYPE_BYTES, type Backend, type DType, type Tensor } from "../../backend/types.ts";
import type { ModelConfig } from "../../hf/config.ts";
import { PROJECTIONS, expectedWeights, linearOf, projectionShape, type Projection } from "../../hf/weights.ts";
import { loraLayout } from "../../lora/layout.ts";
import type { LoraSettings } from "../../lora/settings.ts";
import { allocActivations, type ActivationDtype } from "../../model/causal-lm/activations.ts";
import type { LayerParams, Linear, CausalLmParams } from "../../model/causal-lm/params.ts";
import { DEFAULT_BLOCKSIZE_4BIT } from "../../quant/blockwise.ts";
import { TunaError } from "../../util/errors.ts";
import { roundAllocationSize } from "../../backend/cuda/allocator.ts";

export interface MemoryPlanInput {
  /** The model as trained (vocabulary already resized for added chat tokens). */
  cfg: ModelConfig;
  /** LoRA settings, or null for full fine-tuning. */
  lora: LoraSettings | null;
  baseDtype: "f32" | "bf16";
  /** 4-bit or 8-bit at load; a pre-quantized checkpoint (cfg.quantization) is read as stored either way. */
  quantize: { kind: "4bit"; blocksize?: number } | { kind: "8bit" } | null;
  activationDtype: ActivationDtype;
  checkpointing: boolean;
  /** Tokens of the largest micro-batch (per-device batch x max_seq_length), training or evaluation. */
  tokens: number;
  /** Data parallelism: ranks, optimizer/gradient sharding stage, and the group the frozen layers are sharded over. */
  world: number;
  zeroStage: 0 | 1 | 2;
  /** Ranks the frozen layers are sharded over (ZeRO-3 / FULL_SHARD: the world; HYBRID_SHARD: a machine); 1: not sharded. */
  parameterShards: number;
  /** Optimizer state in host memory (DeepSpeed offload_optimizer / FSDP offload). */
  optimizerOffload: boolean;
  /** Where: the CUDA caching allocator rounds every block (512 B steps to 1 MiB, 2 MiB above); the CPU does not. */
  backend: "cpu" | "cuda";
  /** Bytes outside the tensors (the CUDA context, library workspaces): 0 counts the tensors alone, as peak_memory_gib does. */
  runtimeBytes: number;
}

export interface MemoryPart {
  name: string;
  bytes: number;
  note: string;
}

export interface MemoryPlan {
  parts: MemoryPart[];
  total: number;
}

/** A backend that only counts the bytes of live allocations (views own nothing); every op is refused. */
function countingBackend(block: (bytes: number) => number): { backend: Backend; peak: () => number } {
  let inUse = 0;
  let peak = 0;
  let next = 1;
  const owners = new Set<number>();
  const make = (dtype: DType, shape: readonly number[], name: string, owner: boolean): Tensor => {
    const size = shape.reduce((a, b) => a * b, 1);
    const t: Tensor = { id: next++, dtype, shape: [...shape], size, name };
    if (owner) {
      owners.add(t.id);
      inUse += block(size * DTYPE_BYTES[dtype]);
      peak = Math.max(peak, inUse);
    }
    return t;
  };
  const counting: Partial<Backend> = {
    name: "cpu",
    alloc: (dtype, shape, name) => make(dtype, shape, name ?? "", true),
    free: (t) => {
      if (owners.delete(t.id)) inUse -= block(t.size * DTYPE_BYTES[t.dtype]);
    },
    rows: (t, start, count) => make(t.dtype, [count, ...t.shape.slice(1)], t.name, false),
    view: (t, shape) => make(t.dtype, shape, t.name, false),
  };
  const backend = new Proxy(counting, {
    get(target, key: string) {
      const own = target[key as keyof Backend];
      if (own !== undefined) return own;
      return () => {
        throw new TunaError("INTERNAL", `the memory planner's counting backend does not run ${key}`);
      };
    },
  }) as Backend;
  return { backend, peak: () => peak };
}

/** The activation set of the model for `tokens` tokens, counted by the model's own allocator. */
function activationBytes(cfg: ModelConfig, lora: LoraSettings | null, input: MemoryPlanInput, block: (bytes: number) => number): { all: number; logits: number } {
  const { backend, peak } = countingBackend(block);
  const layout = lora === null ? null : loraLayout(lora, cfg);
  const placeholder: Tensor = { id: 0, dtype: "f32", shape: [1], size: 1, name: "" };
  const layers: LayerParams[] = Array.from({ length: cfg.numLayers }, (_, l) => {
    const proj = {} as Record<Projection, Linear>;
    for (const p of PROJECTIONS) {
      const { out, in: inF } = projectionShape(cfg, p);
      const linear = linearOf(cfg, p).name;
      const m = layout?.modules.find((x) => x.layer === l && x.linear === linear);
      const loraModule = m === undefined || lora === null ? null : { rank: m.r, scale: m.scaling, dropout: lora.dropout, A: placeholder, B: placeholder, dA: placeholder, dB: placeholder, dora: m.magnitudeOffset === null ? null : { magnitude: placeholder, dMagnitude: placeholder, norms: placeholder }, inputOf: linearOf(cfg, p).parts[0]!.projection === p ? null : linearOf(cfg, p).parts[0]!.projection };
      proj[p] = { module: "", inFeatures: inF, outFeatures: out, weight: null, quant: null, bias: null, dweight: null, dbias: null, lora: loraModule };
    }
    return { inputNorm: placeholder, postNorm: placeholder, dInputNorm: null, dPostNorm: null, qkNorm: cfg.qkNorm ? { q: placeholder, k: placeholder, dq: null, dk: null } : null, sandwich: cfg.sandwichNorms ? { attnOut: placeholder, mlpOut: placeholder, dAttnOut: null, dMlpOut: null } : null, proj };
  });
  const params = { cfg, layers } as unknown as CausalLmParams;
  const acts = allocActivations(backend, params, input.tokens, { checkpointing: input.checkpointing, dtype: input.activationDtype });
  return { all: peak(), logits: block(acts.logits.size * DTYPE_BYTES[acts.logits.dtype]) };
}

const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(2)} GiB`;

export function planMemory(input: MemoryPlanInput): MemoryPlan {
  const { cfg, lora } = input;
  const block = input.backend === "cuda" ? roundAllocationSize : (bytes: number): number => bytes;
  const base = DTYPE_BYTES[input.baseDtype];
  const stored = cfg.quantization;
  const full = lora === null;
  const layout = full ? null : loraLayout(lora, cfg);
  // Frozen tensors one allocation each, as the loader makes them (full fine-tuning: views of the f32 buffer).
  let embeddings = 0;
  let norms = 0;
  let layerDense = 0;
  let layerCodes = 0;
  let layerQuantState = 0;
  let maxQuantized = 0;
  let quantizedLinears = 0;
  for (const w of expectedWeights(cfg)) {
    const n = w.shape.reduce((a, b) => a * b, 1);
    if (full) continue;
    // Linear weights and biases (Phi-3's fused ones too) are layer weights; the rest are embeddings and norms.
    if (!(w.quantizable || w.isBias)) {
      if (w.kind === "embed_tokens" || w.kind === "lm_head") embeddings += block(n * base);
      else norms += block(n * base);
      continue;
    }
    const fourBit = w.quantizable && ((stored !== null && stored.loadIn4bit && !stored.skipModules.some((m) => w.name.includes(m))) || (stored === null && input.quantize?.kind === "4bit"));
    if (fourBit) {
      const blocksize = input.quantize?.kind === "4bit" ? (input.quantize.blocksize ?? DEFAULT_BLOCKSIZE_4BIT) : DEFAULT_BLOCKSIZE_4BIT;
      layerCodes += block(Math.ceil(n / 2));
      layerQuantState += block(Math.ceil(n / blocksize) * 4) + block(16 * 4);
      maxQuantized = Math.max(maxQuantized, n);
      quantizedLinears++;
    } else {
      layerDense += block(n * base);
    }
  }
  const parts: MemoryPart[] = [];
  const add = (name: string, bytes: number, note: string): void => {
    parts.push({ name, bytes, note });
  };
  const trainable = full ? expectedWeights(cfg).reduce((sum, w) => sum + w.shape.reduce((a, b) => a * b, 1), 0) : layout!.trainableParams;
  if (full) {
    add("embeddings", 0, "in the trained f32 buffer");
    add("norms", 0, "in the trained f32 buffer");
  } else {
    add("embeddings", embeddings, `${cfg.tieWordEmbeddings ? "embed_tokens (tied to lm_head)" : "embed_tokens and lm_head"}, ${input.baseDtype}`);
    add("norms", norms, "RMSNorm weights");
  }
  const shards = Math.max(1, input.parameterShards);
  const layerWeights = layerDense + layerCodes + layerQuantState;
  if (full) {
    add("layer weights", 0, "in the trained f32 buffer");
    add("quant state", 0, "none");
  } else if (shards > 1) {
    // The rank's shares are host memory (see src/train/sharded-layers.ts); on the device two layers at a time.
    const perLayer = (layerDense + layerCodes + layerQuantState - quantizedLinears * block(64)) / cfg.numLayers;
    add("layer weights", 2 * perLayer, `2 of ${cfg.numLayers} layers gathered at a time (the one computing and the next, prefetched); this rank's 1/${shards} of all of them (${gib(layerWeights / shards)}) is in host memory`);
    add("quant state", quantizedLinears * block(64), "4-bit code tables");
  } else {
    add("layer weights", layerDense + layerCodes, quantizedLinears > 0 ? "decoder projections: 4-bit codes (0.5 byte a weight)" + (layerDense > 0 ? ` and dense ${input.baseDtype}` : "") : `decoder projections, ${input.baseDtype}`);
    add("quant state", layerQuantState, quantizedLinears > 0 ? "absmax (f32 per block) and code tables" : "none");
  }
  add("trainable + gradients", 2 * block(4 * Math.max(1, trainable)), `${trainable.toLocaleString("en-US")} parameters${full ? " (every weight)" : ""}, f32, and their gradients`);
  const shardSize = input.zeroStage >= 1 ? Math.ceil(trainable / input.world) : trainable;
  add("optimizer", input.optimizerOffload ? 0 : 2 * block(4 * Math.max(1, shardSize)), input.optimizerOffload ? "AdamW moments in host memory (offload)" : `AdamW moments, f32${input.zeroStage >= 1 && input.world > 1 ? `, this rank's 1/${input.world}` : ""}`);
  const twin = input.activationDtype === "bf16" && trainable > 0 ? block(2 * trainable) : 0;
  // DoRA builds its adapted weight (out, in) in the same scratch, and keeps each module's row norms.
  const doraModules = layout?.modules.filter((m) => m.magnitudeOffset !== null) ?? [];
  const scratchWeight = Math.max(maxQuantized, ...doraModules.map((m) => m.outFeatures * m.inFeatures));
  const dequant = scratchWeight > 0 ? block(scratchWeight * DTYPE_BYTES[input.activationDtype]) : 0;
  const doraNorms = doraModules.reduce((sum, m) => sum + block(m.outFeatures * base), 0);
  const tokenRows = layout !== null && layout.tokens.length > 0 ? block(cfg.vocabSize * cfg.hiddenSize * base) + block(cfg.vocabSize * cfg.hiddenSize * 4) : 0;
  add("scratch", twin + dequant + tokenRows + doraNorms + block((cfg.headDim / 2) * 4), `dequantized weight, bf16 twin of the trainable buffer, trained-token rows of lm_head, RoPE${doraModules.length > 0 ? ", DoRA row norms" : ""}`);
  const acts = activationBytes(cfg, lora, input, block);
  add("activations", acts.all - acts.logits, `${input.tokens} tokens, ${input.activationDtype}, ${input.checkpointing ? "each layer's input kept (checkpointing)" : "every layer's"}`);
  add("logits chunk", acts.logits, "f32 logits of one chunk of rows");
  add("batch", 3 * block(4 * input.tokens) + block(4 * (input.tokens + 1)), "token ids, labels, positions, sequence starts");
  add("runtime", input.runtimeBytes, input.runtimeBytes > 0 ? "CUDA context and library workspaces (not in the allocator's count)" : "none");
  return { parts, total: parts.reduce((sum, p) => sum + p.bytes, 0) };
}
