// `tuna generate <model> --prompt "..."`: text generation with the KV-cache decoder, streamed to stdout
// or as one JSON object; also the model/tokenizer/sampling setup that `tuna chat` shares.
import { parseArgs } from "node:util";
import { normalizeFlags } from "../flags.ts";
import { quantizeFromFlags } from "../quant-flags.ts";
import { TunaError, errorMessage } from "../../util/errors.ts";
import { createRng } from "../../util/random.ts";
import { createBackend, type DeviceChoice } from "../../backend/factory.ts";
import { openModelForUse } from "../../train/open-model.ts";
import { createTextStream, generate, type GenerateResult, type GenerationOverrides, type ResolvedGeneration } from "../../model/generate.ts";
import type { ChatMessage } from "../../tokenizer/chat-template.ts";
import { processOutput, type CliOutput } from "../output.ts";
import { chatTemplateFor, encodeChat, replyText, resolveFor, sessionOver, type GenerationSession } from "../../train/generation-session.ts";

/** Flags of both generate and chat: the model, the adapter, the device and the sampling settings. */
export const SHARED_OPTIONS = {
  adapter: { type: "string" },
  system: { type: "string" },
  chat_template: { type: "string" },
  max_new_tokens: { type: "string" },
  temperature: { type: "string" },
  top_p: { type: "string" },
  top_k: { type: "string" },
  repetition_penalty: { type: "string" },
  do_sample: { type: "boolean" },
  seed: { type: "string", default: "0" },
  device: { type: "string", default: "auto" },
  bf16: { type: "boolean" },
  use_4bit_quantization: { type: "boolean" },
  bnb_4bit_quant_type: { type: "string", default: "nf4" },
  use_nested_quant: { type: "boolean" },
  use_8bit_quantization: { type: "boolean" },
  revision: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

export const SHARED_HELP = `  --adapter DIR                  a PEFT LoRA adapter folder to apply (its tokenizer.json, if any, is used)
  --system TEXT                  a system message for the chat template
  --chat_template FILE           a Jinja chat template, for models whose tokenizer has none
  --max_new_tokens N             stop after N new tokens (default: generation_config.json, else 128)
  --do_sample                    sample instead of greedy decoding
  --temperature T                > 0 samples with this temperature, 0 forces greedy
  --top_k K                      sample among the K most likely tokens (default 50; 0 = off)
  --top_p P                      nucleus sampling: the smallest set of probability >= P (default 1 = off)
  --repetition_penalty R         HF's repetition penalty over prompt and reply (default 1 = off)
  --seed N                       seed of the sampling draws (default 0)
  Defaults not given here come from the model's generation_config.json, as transformers does.
  --device auto|cpu|cuda         default auto
  --bf16                         keep base weights in bf16 (default f32 on CPU)
  --use_4bit_quantization        quantize the linear layers to 4-bit at load (QLoRA base)
  --bnb_4bit_quant_type nf4|fp4  4-bit code (default nf4)
  --use_nested_quant             double-quantize the 4-bit absmax
  --use_8bit_quantization        LLM.int8 rowwise weights
  --revision REV                 hub revision when <model> is a hub id`;

const HELP = `usage: tuna generate <model folder | hub id> --prompt TEXT [options]

Generates a continuation of the prompt with the model (and an optional PEFT adapter), streaming it.
Greedy unless --do_sample or --temperature > 0 (or the model's generation_config.json samples).
  --prompt TEXT                  the prompt (the tokenizer adds BOS as it is configured to)
  --chat                         wrap the prompt as one user message through the chat template
${SHARED_HELP}
  --json                         print one JSON object instead of streaming`;

export type SharedValues = { [K in keyof typeof SHARED_OPTIONS]?: (typeof SHARED_OPTIONS)[K]["type"] extends "string" ? string : boolean };


export function parseFlags<O extends Record<string, { type: "string" | "boolean"; short?: string; default?: string | boolean }>>(args: string[], options: O, help: string) {
  try {
    return parseArgs({ args: normalizeFlags(args), allowPositionals: true, options });
  } catch (e) {
    throw new TunaError("CONFIG_UNKNOWN", `${errorMessage(e)}\n\n${help}`, { cause: e });
  }
}

/** A numeric flag, or undefined when absent; a problem is recorded when it does not parse or is out of range. */
function numberFlag(values: SharedValues, name: "max_new_tokens" | "temperature" | "top_p" | "top_k" | "repetition_penalty" | "seed", problems: string[], check: { integer: boolean; min: number }): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(n) || (check.integer && !Number.isSafeInteger(n)) || n < check.min) {
    problems.push(`--${name} must be ${check.integer ? "an integer" : "a number"} >= ${check.min}, got "${raw}"`);
    return undefined;
  }
  return n;
}

export interface SharedSettings {
  overrides: GenerationOverrides;
  seed: number;
  device: DeviceChoice;
}

/** Reads the shared flags; problems go into `problems` so the command reports them all together. */
export function sharedSettings(values: SharedValues, problems: string[]): SharedSettings {
  const overrides: GenerationOverrides = {};
  const set = <K extends keyof GenerationOverrides>(key: K, value: GenerationOverrides[K] | undefined): void => {
    if (value !== undefined) overrides[key] = value;
  };
  set("maxNewTokens", numberFlag(values, "max_new_tokens", problems, { integer: true, min: 1 }));
  set("temperature", numberFlag(values, "temperature", problems, { integer: false, min: 0 }));
  set("topP", numberFlag(values, "top_p", problems, { integer: false, min: 0 }));
  set("topK", numberFlag(values, "top_k", problems, { integer: true, min: 0 }));
  set("repetitionPenalty", numberFlag(values, "repetition_penalty", problems, { integer: false, min: 0 }));
  if (values.do_sample === true) overrides.doSample = true;
  const seed = numberFlag(values, "seed", problems, { integer: true, min: 0 }) ?? 0;
  const device = values.device ?? "auto";
  if (device !== "auto" && device !== "cpu" && device !== "cuda") problems.push(`--device must be auto, cpu or cuda, got "${device}"`);
  const quantType = values.bnb_4bit_quant_type;
  if (quantType !== undefined && quantType !== "nf4" && quantType !== "fp4") problems.push(`--bnb_4bit_quant_type must be nf4 or fp4, got "${quantType}"`);
  if (values.use_4bit_quantization === true && values.use_8bit_quantization === true) problems.push("--use_4bit_quantization and --use_8bit_quantization exclude each other");
  return { overrides, seed, device: device as DeviceChoice };
}

/** A model opened for generation: weights on a backend, its tokenizer, generation defaults and one decoder. */
export async function openGenerationSession(
  modelPath: string,
  values: SharedValues,
  device: DeviceChoice,
  onNotice?: (message: string) => void,
): Promise<GenerationSession> {
  const backend = createBackend(device, onNotice);
  const opened = await openModelForUse(backend, modelPath, {
    baseDtype: values.bf16 === true ? "bf16" : "f32",
    quantize: quantizeFromFlags(values),
    ...(values.adapter === undefined ? {} : { adapterDir: values.adapter }),
    ...(values.revision === undefined ? {} : { revision: values.revision }),
    ...(onNotice === undefined ? {} : { onNotice }),
  });
  return sessionOver(backend, opened, values.adapter);
}

/**
 * Where streamed text goes: straight to process.stdout for the real CLI; for an injected output (tests),
 * collected and passed on a line at a time, since CliOutput writes whole lines.
 */
export function streamWriter(output: CliOutput): { write(text: string): void; end(): void } {
  if (output === processOutput) {
    return {
      write: (text) => process.stdout.write(text),
      end: () => process.stdout.write("\n"),
    };
  }
  let pending = "";
  return {
    write(text) {
      pending += text;
      let nl = pending.indexOf("\n");
      while (nl >= 0) {
        output.out(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
        nl = pending.indexOf("\n");
      }
    },
    end() {
      output.out(pending);
      pending = "";
    },
  };
}

/** Runs one generation, streaming its text through `write` when given. */
export async function runGeneration(session: GenerationSession, prompt: number[], settings: ResolvedGeneration, seed: number, write?: (text: string) => void): Promise<GenerateResult> {
  const eos = new Set(settings.eosTokenIds);
  const stream = createTextStream((ids) => session.tokenizer.decode(ids, { skipSpecialTokens: true }));
  const result = await generate(session.decoder, prompt, {
    maxNewTokens: settings.maxNewTokens,
    eosTokenIds: settings.eosTokenIds,
    sampling: settings.sampling,
    rng: createRng(seed),
    maxPositions: session.opened.cfg.maxPositionEmbeddings,
    ...(write === undefined
      ? {}
      : {
          onToken: (t: number) => {
            if (!eos.has(t)) write(stream.push(t));
          },
        }),
  });
  write?.(stream.flush());
  return result;
}

export function tokensPerSecond(r: GenerateResult): number {
  return r.decodeMs > 0 ? (r.decodeSteps * 1000) / r.decodeMs : 0;
}

export async function generateCommand(args: string[], output: CliOutput): Promise<number> {
  const { values, positionals } = parseFlags(args, { ...SHARED_OPTIONS, prompt: { type: "string" }, chat: { type: "boolean" }, json: { type: "boolean" } }, HELP);
  if (values.help === true) {
    output.out(HELP);
    return 0;
  }
  const problems: string[] = [];
  if (positionals.length !== 1) problems.push("give exactly one model (folder or hub id)");
  if (values.prompt === undefined) problems.push("--prompt is required");
  if (values.chat !== true && (values.system !== undefined || values.chat_template !== undefined)) problems.push("--system and --chat_template need --chat");
  const shared = sharedSettings(values, problems);
  if (problems.length > 0) throw new TunaError("CONFIG_INVALID", `${problems.join("; ")}.\n\n${HELP}`);

  const session = await openGenerationSession(positionals[0]!, values, shared.device, (m) => {
    output.err(m);
  });
  const promptText = values.prompt!;
  let prompt: number[];
  if (values.chat === true) {
    const template = chatTemplateFor(session, values.chat_template);
    const messages: ChatMessage[] = values.system === undefined ? [] : [{ role: "system", content: values.system }];
    messages.push({ role: "user", content: promptText });
    prompt = encodeChat(session, template, messages);
  } else {
    prompt = session.tokenizer.encode(promptText);
  }
  const settings = resolveFor(session, shared.overrides);
  if (values.json === true) {
    const r = await runGeneration(session, prompt, settings, shared.seed);
    const result = {
      model: session.opened.dir,
      adapter: values.adapter ?? null,
      prompt: promptText,
      chat: values.chat === true,
      prompt_tokens: r.promptTokens,
      completion: replyText(session, r),
      tokens: r.tokens,
      new_tokens: r.tokens.length,
      finish_reason: r.finishReason,
      context_limited: r.contextLimited,
      max_new_tokens: settings.maxNewTokens,
      eos_token_ids: settings.eosTokenIds,
      sampling: {
        do_sample: settings.sampling.doSample,
        temperature: settings.sampling.temperature,
        top_k: settings.sampling.topK,
        top_p: settings.sampling.topP,
        repetition_penalty: settings.sampling.repetitionPenalty,
        seed: shared.seed,
      },
      prefill_ms: r.prefillMs,
      decode_ms: r.decodeMs,
      decode_tokens_per_second: tokensPerSecond(r),
    };
    output.out(JSON.stringify(result, null, 2));
    return 0;
  }
  const writer = streamWriter(output);
  const r = await runGeneration(session, prompt, settings, shared.seed, (text) => {
    writer.write(text);
  });
  writer.end();
  if (r.contextLimited && r.finishReason === "length") {
    output.err(`warning: stopped at the model's context of ${session.opened.cfg.maxPositionEmbeddings} tokens (max_position_embeddings), before max_new_tokens ${settings.maxNewTokens}.`);
  }
  output.err(
    `[${r.tokens.length} new tokens, finish: ${r.finishReason}, prompt ${r.promptTokens} tokens in ${r.prefillMs.toFixed(0)} ms, ` +
      `decode ${tokensPerSecond(r).toFixed(1)} tokens/s, ${settings.sampling.doSample ? `sampling (seed ${shared.seed})` : "greedy"}]`,
  );
  return 0;
}
