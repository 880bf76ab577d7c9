// `tuna export --adapter DIR --adapter_only`: a PEFT LoRA adapter as a GGUF LoRA adapter, the file llama.cpp
// applies at run time (`llama-cli -m base.gguf --lora adapter.gguf`). llama.cpp scales every module by
// adapter.lora.alpha / rank, so PEFT's own scaling (rsLoRA's alpha / sqrt(r), rank_pattern, alpha_pattern) is
// folded into lora_b, which keeps the product exact where llama.cpp's converter would ignore them.
import { stat } from "node:fs/promises";
import { basename, resolve } from "node:path";
import { TunaError } from "../util/errors.ts";
import { readModelConfig } from "../hf/folder.ts";
import { readAdapter } from "../lora/adapter-files.ts";
import { gguf, type GgmlTypeName, type GgufValue } from "../io/gguf/format.ts";
import { encodeGgml } from "../io/gguf/quants.ts";
import { writeGguf, type GgufTensorToWrite } from "../io/gguf/writer.ts";
import { ggufArchOf, ggufTensorName, permuteRotaryRows, rotaryHeadsOf } from "../hf/gguf-arch.ts";
import { checkOutput } from "./export.ts";
import { converterType, type GgufOutType } from "./tensor-types.ts";

export interface GgufLoraResult {
  output: string;
  bytes: number;
  architecture: string;
  modules: number;
  alpha: number;
}

/** Writes the adapter of `adapterDir` (trained on `baseDir`) as a GGUF LoRA adapter file. */
export async function exportGgufLora(baseDir: string, options: { adapterDir: string; output: string; outType: GgufOutType; overwrite?: boolean; name?: string }): Promise<GgufLoraResult> {
  const out = resolve(options.output);
  const adapterDir = resolve(options.adapterDir);
  if (options.outType === "q4_k_m") throw new TunaError("CONFIG_INVALID", "a GGUF LoRA adapter is written in f32, f16, bf16 or q8_0; q4_k_m is a mixture for whole models.");
  await checkOutput(out, options.overwrite === true, [{ path: adapterDir, what: "adapter folder" }]);
  if (!(await stat(adapterDir).then((s) => s.isDirectory(), () => false))) {
    throw new TunaError("FILE_NOT_FOUND", `adapter folder not found: ${adapterDir}; give the folder holding adapter_config.json and adapter_model.safetensors.`);
  }
  const cfg = await readModelConfig(resolve(baseDir));
  const arch = ggufArchOf(cfg);
  const adapter = await readAdapter(adapterDir, cfg);
  const refuse = (what: string): never => {
    throw new TunaError("UNSUPPORTED", `${adapterDir} ${what}, which a GGUF LoRA adapter cannot hold; export the merged model instead (tuna export ${baseDir} --adapter ${options.adapterDir} --format gguf).`);
  };
  if (adapter.settings.useDora) refuse("is a DoRA adapter (its magnitudes rescale whole rows)");
  if (adapter.embeddings !== null || adapter.params.layout.tokens.length > 0) refuse("trains embedding rows or saves whole embedding matrices");
  const alpha = adapter.settings.alpha;
  const outType = options.outType;
  const typeFor = (rowLength: number): GgmlTypeName => converterType(outType, rowLength);
  const tensors: GgufTensorToWrite[] = [];
  for (const m of adapter.params.layout.modules) {
    const t = adapter.params.byModule.get(m.name);
    if (t === undefined) throw new TunaError("INTERNAL", `the adapter has no tensors for ${m.name}`);
    const name = ggufTensorName(`${m.name}.weight`, arch);
    // llama.cpp applies (alpha / r) * B A; PEFT applies m.scaling * B A.
    const fold = (m.scaling * m.r) / alpha;
    const heads = rotaryHeadsOf(arch, cfg, `${m.name}.weight`);
    const a = t.a;
    const b = (): Float32Array => {
      const scaled = fold === 1 ? t.b : t.b.map((v) => v * fold);
      return heads === null ? scaled : permuteRotaryRows(scaled, heads, m.r);
    };
    tensors.push(
      { name: `${name}.lora_a`, type: typeFor(m.inFeatures), ne: [m.inFeatures, m.r], data: () => encodeGgml(a, m.inFeatures, typeFor(m.inFeatures)) },
      { name: `${name}.lora_b`, type: typeFor(m.r), ne: [m.r, m.outFeatures], data: () => encodeGgml(b(), m.r, typeFor(m.r)) },
    );
  }
  const metadata = new Map<string, GgufValue>([
    ["general.architecture", gguf.str(arch)],
    ["general.type", gguf.str("adapter")],
    ["general.name", gguf.str(options.name ?? basename(adapterDir))],
    ["adapter.type", gguf.str("lora")],
    ["adapter.lora.alpha", gguf.f32(alpha)],
  ]);
  const { bytes } = await writeGguf(out, metadata, tensors);
  return { output: out, bytes, architecture: arch, modules: adapter.params.layout.modules.length, alpha };
}
