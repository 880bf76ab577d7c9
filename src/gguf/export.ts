// `tuna export --format gguf`: a base model, optionally with a PEFT adapter merged in, written as one GGUF
// v3 file that llama.cpp loads: architecture metadata, the tokenizer, and every tensor in F32/F16/BF16/Q8_0
// or llama.cpp's Q4_K_M mixture, one tensor in memory at a time.
import { stat } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { TunaError } from "../util/errors.ts";
import { pathExists } from "../util/fs-checks.ts";
import { isInside } from "../util/paths.ts";
import { readJsonObject } from "../tokenizer/config.ts";
import { loadTokenizer } from "../tokenizer/load.ts";
import { openModelFolder } from "../hf/folder.ts";
import { readAdapter, type LoraAdapter } from "../lora/adapter-files.ts";
import { adapterBaseWarning } from "../lora/base-model-match.ts";
import { mergedWeight, planMerge } from "../lora/merged-weights.ts";
import { gguf, type GgmlTypeName, type GgufValue } from "../io/gguf/format.ts";
import { encodeGgml } from "../io/gguf/quants.ts";
import { encodeGgmlParallel } from "./quantize-job.ts";
import { writeGguf, type GgufTensorToWrite } from "../io/gguf/writer.ts";
import { archMetadata, exportedWeights, ggufArchOf, ggufTensorName, ggufValues, llama3RopeFactors, permuteRotaryRows, rotaryHeadsOf } from "../hf/gguf-arch.ts";
import { FILE_TYPES, tensorTypes, type GgufOutType } from "./tensor-types.ts";
import { ggufVocab } from "./vocab.ts";

export interface GgufExportOptions {
  /** A PEFT adapter folder to merge in first. */
  adapterDir?: string;
  /** The .gguf file to write. */
  output: string;
  outType: GgufOutType;
  /** Replace an existing file. */
  overwrite?: boolean;
  /** general.name (default: the model folder's name). */
  name?: string;
  onTensor?: (progress: { name: string; index: number; total: number }) => void;
}

export interface GgufExportResult {
  output: string;
  bytes: number;
  architecture: string;
  tensors: number;
  /** How many tensors got each ggml type. */
  types: Partial<Record<GgmlTypeName, number>>;
  tokenizer: "gpt2" | "llama";
  mergedModules: number;
  baseMismatch: string | null;
  /** Things llama.cpp will do differently from transformers with this model, said once each. */
  notes: string[];
}

/** The output may not lie inside a source folder, may not be a folder, and replaces a file only with overwrite. */
export async function checkOutput(out: string, overwrite: boolean, sources: { path: string; what: string }[]): Promise<void> {
  for (const s of sources) {
    if (isInside(s.path, out)) throw new TunaError("CONFIG_INVALID", `the output ${out} is inside the ${s.what} ${s.path}; write the GGUF file elsewhere.`);
  }
  const info = await stat(out).catch(() => null);
  if (info === null) return;
  if (info.isDirectory()) throw new TunaError("CONFIG_INVALID", `the output ${out} is a folder; give a file path such as ${join(out, "model.gguf")}.`);
  if (!overwrite) throw new TunaError("CONFIG_INVALID", `the output ${out} exists; pass --overwrite to replace it, or choose another path.`);
}

/** Writes `baseDir` (with `options.adapterDir` merged in) as a GGUF file; the file appears only once complete. */
export async function exportGguf(baseDir: string, options: GgufExportOptions): Promise<GgufExportResult> {
  const out = resolve(options.output);
  const adapterDir = options.adapterDir === undefined ? undefined : resolve(options.adapterDir);
  await checkOutput(out, options.overwrite === true, [
    { path: resolve(baseDir), what: "base model folder" },
    ...(adapterDir === undefined ? [] : [{ path: adapterDir, what: "adapter folder" }]),
  ]);
  if (adapterDir !== undefined && !(await stat(adapterDir).then((s) => s.isDirectory(), () => false))) {
    throw new TunaError("FILE_NOT_FOUND", `adapter folder not found: ${adapterDir}; give the folder holding adapter_config.json and adapter_model.safetensors.`);
  }
  const folder = await openModelFolder(baseDir);
  try {
    const arch = ggufArchOf(folder.config);
    const adapter: LoraAdapter | null = adapterDir === undefined ? null : await readAdapter(adapterDir, folder.config);
    const mismatch = adapter === null || adapterDir === undefined ? undefined : adapterBaseWarning(adapter.settings.baseModelNameOrPath, baseDir, folder.dir, adapterDir);
    const plan = planMerge(folder, adapter, adapterDir);
    const cfg = plan.cfg;

    // The tokenizer saved with the adapter (a run that added tokens saves it there), else the base's.
    const tokenizerDir = adapterDir !== undefined && (await pathExists(join(adapterDir, "tokenizer.json"))) ? adapterDir : folder.dir;
    const tokenizerJson = await readJsonObject(join(tokenizerDir, "tokenizer.json"), "tokenizer");
    if (tokenizerJson === undefined) {
      throw new TunaError("FILE_NOT_FOUND", `no tokenizer.json in ${tokenizerDir}: a GGUF file carries its tokenizer, and tuna builds it from tokenizer.json.`);
    }
    const vocab = ggufVocab(tokenizerJson, await loadTokenizer(tokenizerDir, cfg.modelType), cfg.vocabSize, join(tokenizerDir, "tokenizer.json"));

    const weights = exportedWeights(plan.weights, cfg);
    const ropeFactors = llama3RopeFactors(cfg);
    const described = [
      ...(ropeFactors === null ? [] : [{ name: "rope_freqs.weight", ne: [ropeFactors.length] }]),
      ...weights.map((w) => ({ name: ggufTensorName(w.name, arch), ne: [...w.shape].reverse() })),
    ];
    const types = tensorTypes(options.outType, described, { numLayers: cfg.numLayers, is70b: cfg.numLayers === 80 && cfg.numHeads !== cfg.numKvHeads });
    const tensors: GgufTensorToWrite[] = described.map((t, i) => {
      const type = types[i]!;
      const hf = ropeFactors === null ? weights[i] : weights[i - 1];
      return {
        name: t.name,
        ne: t.ne,
        type,
        data: async () => {
          if (hf === undefined) return encodeGgml(ropeFactors!, ropeFactors!.length, type);
          let values = ggufValues(arch, hf.name, await mergedWeight(folder, plan, hf));
          const rowLength = hf.shape.length === 2 ? hf.shape[1]! : 1;
          const heads = rotaryHeadsOf(arch, cfg, hf.name);
          if (heads !== null) values = permuteRotaryRows(values, heads, rowLength);
          return encodeGgmlParallel(values, t.ne[0]!, type);
        },
      };
    });

    const metadata = new Map<string, GgufValue>([
      ["general.architecture", gguf.str(arch)],
      ["general.type", gguf.str("model")],
      ["general.name", gguf.str(options.name ?? basename(folder.dir))],
      ...archMetadata(arch, cfg),
      ["general.file_type", gguf.u32(FILE_TYPES[options.outType])],
      ["general.quantization_version", gguf.u32(2)],
      ...vocab.metadata,
    ]);
    const notes: string[] = [];
    if (cfg.layerWindows.some((w) => w !== null) && (arch === "llama" || arch === "phi3")) {
      notes.push(`llama.cpp's ${arch} architecture attends to the whole context; this model's sliding window of ${cfg.slidingWindow} tokens is not applied there.`);
    }
    if (cfg.ropeScaling.type === "dynamic") notes.push("llama.cpp has no dynamic NTK RoPE scaling; up to max_position_embeddings it equals transformers.");
    const { bytes } = await writeGguf(out, metadata, tensors, options.onTensor);
    const counts: Partial<Record<GgmlTypeName, number>> = {};
    for (const t of types) counts[t] = (counts[t] ?? 0) + 1;
    return {
      output: out,
      bytes,
      architecture: arch,
      tensors: tensors.length,
      types: counts,
      tokenizer: vocab.model,
      mergedModules: plan.lora.size,
      baseMismatch: mismatch ?? null,
      notes,
    };
  } finally {
    await folder.weights.close();
  }
}
