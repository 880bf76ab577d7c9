// `tuna inspect <model>`: architecture, parameter counts per module kind, stored dtypes, memory at
// bf16 / NF4, tokenizer summary and chat template; `--json` for machines, `--preset` for shapes only.
import { parseArgs } from "node:util";
import { TunaError, errorMessage } from "../../util/errors.ts";
import { MODEL_PRESETS, PRESET_NAMES } from "../../hf/presets.ts";
import { parseModelConfig } from "../../hf/config.ts";
import { openModelFolder } from "../../hf/folder.ts";
import { describeModel, type ModelDescription } from "../../hf/describe.ts";
import type { GenerationConfig } from "../../hf/generation-config.ts";
import { resolveModelPath } from "../../hub/resolve.ts";
import { loadTokenizer, type LoadedTokenizer } from "../../tokenizer/load.ts";
import { formatBytes, formatCount, table } from "../format.ts";
import type { CliOutput } from "../output.ts";

const HELP = `usage: tuna inspect <model folder | hub id> [--json] [--revision REV]
       tuna inspect --preset NAME [--json]

Describes a model: architecture, parameter counts per module kind, stored dtypes, weight memory at
bf16 and NF4, tokenizer (special tokens, added tokens, chat template) and generation defaults.
  --json            print one JSON object instead of text
  --revision REV    hub revision (branch, tag or commit) when <model> is a hub id
  --preset NAME     describe a built-in shape without weights (${PRESET_NAMES.join(", ")})`;

interface TokenizerSummary {
  kind: string;
  vocabSize: number;
  size: number;
  addedTokens: number;
  bos: string | null;
  eos: string | null;
  pad: string | null;
  unk: string | null;
  addBosToken: boolean;
  addEosToken: boolean;
  chatTemplate: boolean;
  modelMaxLength: number | null;
}

interface InspectResult {
  source: string;
  path: string | null;
  model: ModelDescription;
  tokenizer: TokenizerSummary | null;
  tokenizerNote?: string;
  generation: GenerationConfig | null;
}

function summarizeTokenizer(t: LoadedTokenizer): TokenizerSummary {
  const tok = (text: string | undefined, id: number | undefined): string | null =>
    text === undefined ? null : id === undefined ? text : `${text} (${id})`;
  return {
    kind: t.kind,
    vocabSize: t.vocabSize,
    size: t.size,
    addedTokens: t.addedTokens.length,
    bos: tok(t.bosToken, t.bosTokenId),
    eos: tok(t.eosToken, t.eosTokenId),
    pad: tok(t.padToken, t.padTokenId),
    unk: t.unkToken ?? null,
    addBosToken: t.addBosToken,
    addEosToken: t.addEosToken,
    chatTemplate: t.chatTemplate !== undefined,
    // tokenizer_config often carries 1e30 to mean "no limit"; only show real limits.
    modelMaxLength: t.modelMaxLength !== undefined && t.modelMaxLength < 1e12 ? t.modelMaxLength : null,
  };
}

async function inspectPath(source: string, revision: string | undefined): Promise<InspectResult> {
  const path = await resolveModelPath(source, revision === undefined ? {} : { revision });
  const folder = await openModelFolder(path);
  try {
    let tokenizer: TokenizerSummary | null = null;
    let tokenizerNote: string | undefined;
    try {
      tokenizer = summarizeTokenizer(await loadTokenizer(folder.dir));
    } catch (e) {
      // A missing tokenizer is a fact to report; a broken one is an error the user must see.
      if (e instanceof TunaError && e.code === "FILE_NOT_FOUND") tokenizerNote = errorMessage(e);
      else throw e;
    }
    const model = describeModel(folder.config, { ...folder.weightCheck, files: folder.weights.files.length });
    const result: InspectResult = { source, path: folder.dir, model, tokenizer, generation: folder.generationConfig ?? null };
    if (tokenizerNote !== undefined) result.tokenizerNote = tokenizerNote;
    return result;
  } finally {
    await folder.weights.close();
  }
}

function renderText(r: InspectResult): string {
  const m = r.model;
  const yesNo = (b: boolean): string => (b ? "yes" : "no");
  const rope = m.ropeScaling.type === "default" ? "none" : JSON.stringify(m.ropeScaling);
  const lines: string[] = [`model: ${r.source}${r.path !== null && r.path !== r.source ? `  (${r.path})` : ""}`];
  lines.push(
    table([
      ["architecture", `${m.architecture} (model_type ${m.modelType})`],
      ["layers", String(m.layers)],
      ["hidden / ffn", `${m.hiddenSize} / ${m.intermediateSize}`],
      ["heads", `${m.heads} query, ${m.kvHeads} key/value (head_dim ${m.headDim}${m.heads !== m.kvHeads ? ", grouped-query" : ""})`],
      ["vocab", String(m.vocabSize)],
      ["positions", `${m.maxPositionEmbeddings} (rope_theta ${m.ropeTheta}, scaling ${rope})`],
      ["rms_norm_eps", String(m.rmsNormEps)],
      ["tied embeddings", yesNo(m.tieWordEmbeddings)],
      ["attention bias", `q/k/v ${yesNo(m.attentionBias.qkv)}, o ${yesNo(m.attentionBias.o)}`],
      ["sliding window", m.slidingWindow === null ? "none" : `${m.slidingWindow} (${m.slidingLayers} of ${m.layers} layers)`],
      ...(m.features.length === 0 ? [] : [["family features", m.features.join(", ")] as [string, string]]),
    ]),
  );
  lines.push(`parameters: ${formatCount(m.parameters.total)} (${m.parameters.total.toLocaleString("en-US")})`);
  const kinds = Object.entries(m.parameters.byKind).map(
    ([k, n]) => [k, `${formatCount(n)}  ${((100 * n) / m.parameters.total).toFixed(1)}%`] as const,
  );
  lines.push(table(kinds));
  lines.push("weight memory:");
  lines.push(
    table([
      ["bf16", formatBytes(m.memory.bf16Bytes)],
      ["nf4", `${formatBytes(m.memory.nf4Bytes)} (linear layers 4-bit, fp32 absmax; rest bf16)`],
      ["nf4 + double quant", formatBytes(m.memory.nf4DoubleQuantBytes)],
    ]),
  );
  if (m.quantization !== null) {
    const q = m.quantization;
    const kind = q.loadIn4bit ? `${q.quantType} 4-bit${q.useDoubleQuant ? ", double quant" : ""}` : "int8";
    lines.push(`quantization: bitsandbytes ${kind} (storage ${q.quantStorage ?? "uint8"}, compute ${q.computeDtype ?? "float32"})`);
  }
  if (m.stored !== undefined) {
    const s = m.stored;
    const dtypes = Object.entries(s.bytesByDtype).map(([d, b]) => `${d} ${formatBytes(b)}`);
    lines.push(`stored: ${s.files} safetensors file(s); ${dtypes.join(", ")}${s.quantizedLinear > 0 ? `; ${s.quantizedLinear} quantized linear weights` : ""}`);
    if (s.unexpectedTensors.length > 0) {
      lines.push(`  unused tensors (ignored): ${s.unexpectedTensors.slice(0, 5).join(", ")}${s.unexpectedTensors.length > 5 ? ", ..." : ""}`);
    }
  }
  if (r.tokenizer !== null) {
    const t = r.tokenizer;
    lines.push(`tokenizer: ${t.kind}, vocab ${t.vocabSize}, ${t.size} tokens with ${t.addedTokens} added`);
    lines.push(
      table([
        ["special", `bos ${t.bos ?? "none"}, eos ${t.eos ?? "none"}, pad ${t.pad ?? "none"}, unk ${t.unk ?? "none"}`],
        ["adds", `bos ${yesNo(t.addBosToken)}, eos ${yesNo(t.addEosToken)}`],
        ["chat template", t.chatTemplate ? "present" : "absent (use --chat_template_format chatml|zephyr to train chat data)"],
      ]),
    );
    if (t.size > m.vocabSize) lines.push(`  warning: the tokenizer has ${t.size} tokens but the model's vocab is ${m.vocabSize}`);
  } else if (r.path !== null) {
    lines.push(`tokenizer: none (${r.tokenizerNote ?? "not found"})`);
  }
  if (r.generation !== null) {
    const g = r.generation;
    const parts = [`eos ${JSON.stringify(g.eosTokenIds)}`, `do_sample ${g.doSample}`];
    if (g.temperature !== undefined) parts.push(`temperature ${g.temperature}`);
    if (g.topP !== undefined) parts.push(`top_p ${g.topP}`);
    if (g.topK !== undefined) parts.push(`top_k ${g.topK}`);
    if (g.maxNewTokens !== undefined) parts.push(`max_new_tokens ${g.maxNewTokens}`);
    lines.push(`generation: ${parts.join(", ")}`);
  }
  return lines.join("\n");
}

export async function inspectCommand(args: string[], output: CliOutput): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: { json: { type: "boolean" }, revision: { type: "string" }, preset: { type: "string" }, help: { type: "boolean", short: "h" } },
    });
  } catch (e) {
    throw new TunaError("CONFIG_UNKNOWN", `${errorMessage(e)}\n\n${HELP}`, { cause: e });
  }
  const { values, positionals } = parsed;
  if (values.help === true) {
    output.out(HELP);
    return 0;
  }
  let result: InspectResult;
  if (values.preset !== undefined) {
    const config = MODEL_PRESETS[values.preset];
    if (config === undefined) throw new TunaError("CONFIG_INVALID", `unknown preset "${values.preset}"; known presets: ${PRESET_NAMES.join(", ")}.`);
    const cfg = parseModelConfig(config, `preset ${values.preset}`);
    result = { source: `preset ${values.preset}`, path: null, model: describeModel(cfg), tokenizer: null, generation: null };
  } else {
    if (positionals.length !== 1) throw new TunaError("CONFIG_INVALID", `inspect takes exactly one model (folder or hub id).\n\n${HELP}`);
    result = await inspectPath(positionals[0]!, values.revision);
  }
  output.out(values.json === true ? JSON.stringify(result, null, 2) : renderText(result));
  return 0;
}
