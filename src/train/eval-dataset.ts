// `tuna eval` on a dataset as `tuna train` reads it (any source and format, chat templates, loss masks; not
// packed unless asked): the token-mean loss and perplexity of each split, and optionally a generation metric
// against each example's reference answer (the last assistant turn, or the completion): exact match or
// contains, greedy, as the demo measures.
import type { Backend } from "../backend/types.ts";
import type { TrainConfig } from "../config/index.ts";
import { setupChatFormat } from "../data/chat-format.ts";
import { detectFormat, formatOrigin, toExample } from "../data/formats.ts";
import { prepareDatasets } from "../data/prepare.ts";
import { loadDataset } from "../data/sources/load.ts";
import { specialTokenOverrides, trainPrepareOptions } from "../data/train-options.ts";
import { templateVariables } from "../data/tokenize.ts";
import type { Example } from "../data/types.ts";
import { generate } from "../model/generate.ts";
import { GREEDY } from "../model/sampling.ts";
import { createDecoder } from "../model/causal-lm/decode.ts";
import { asTrainingModel, createCausalLm } from "../model/causal-lm/model.ts";
import { renderChatTemplate, type ChatMessage } from "../tokenizer/chat-template.ts";
import { loadTokenizer } from "../tokenizer/load.ts";
import { TunaError } from "../util/errors.ts";
import { createRng } from "../util/random.ts";
import { openModelForUse, tokenizerDirFor } from "./open-model.ts";
import { quantizeOption } from "./model-setup.ts";
import { evaluate } from "./trainer.ts";
import { trainerSettings } from "./recipe.ts";

export type GenerationMetric = "exact_match" | "contains";

export interface SplitEvaluation {
  split: string;
  loss: number;
  perplexity: number;
  tokens: number;
  examples: number;
  /** The generation metric over the examples that have a reference answer. */
  metric?: { name: GenerationMetric; value: number; examples: number };
}

/** The prompt (as messages, or text) and the reference answer of an example, when it has one. */
function promptAndAnswer(example: Example): { messages?: ChatMessage[]; text?: string; answer: string } | undefined {
  if (example.kind === "conversation") {
    const last = example.messages.findLastIndex((m) => m.role === "assistant");
    if (last < 1) return undefined;
    return { messages: example.messages.slice(0, last), answer: example.messages[last]!.content };
  }
  if (example.kind === "prompt_completion") return { text: example.prompt, answer: example.completion };
  if (example.kind === "prompt_completion_chat") {
    const answer = example.completion.find((m) => m.role === "assistant")?.content;
    return answer === undefined ? undefined : { messages: example.prompt, answer };
  }
  return undefined;
}

export async function evaluateDataset(
  backend: Backend,
  c: TrainConfig,
  o: { adapter?: string; metric?: GenerationMetric; maxNewTokens: number; onNotice: (m: string) => void },
): Promise<SplitEvaluation[]> {
  const opened = await openModelForUse(backend, c.model_name_or_path, {
    baseDtype: c.bf16 ? "bf16" : "f32",
    quantize: quantizeOption(c) ?? null,
    ...(o.adapter === undefined ? {} : { adapterDir: o.adapter }),
    ...(c.model_revision === undefined ? {} : { revision: c.model_revision }),
    onNotice: o.onNotice,
  });
  const tokenizerDir = tokenizerDirFor(opened.dir, o.adapter);
  const chat = setupChatFormat(await loadTokenizer(tokenizerDir, opened.cfg.modelType), c.chat_template_format, opened.cfg.vocabSize, c.chat_template_file, specialTokenOverrides(c));
  const prepareOptions = trainPrepareOptions(c, { dir: tokenizerDir, vocabSize: opened.cfg.vocabSize, modelType: opened.cfg.modelType });
  const splits = await prepareDatasets({ ...prepareOptions, useCache: false, onNotice: o.onNotice });
  const model = createCausalLm(backend, opened.params, { checkpointing: false, seed: 0 });
  const settings = trainerSettings(c, chat.tokenizer.padTokenId ?? chat.tokenizer.eosTokenId ?? 0);
  const out: SplitEvaluation[] = [];
  for (const [name, split] of splits) {
    const r = await evaluate(asTrainingModel(model), split.sequences, settings);
    if (r.tokens === 0) throw new TunaError("CONFIG_INVALID", `split "${name}": no trained token to compute a loss over; check the loss-mask options.`);
    out.push({ split: name, loss: r.loss, perplexity: Math.exp(r.loss), tokens: r.tokens, examples: split.stats.rows });
  }
  if (o.metric === undefined) return out;

  // Generation: greedy answers to each example's prompt, compared with its reference answer.
  const rows = await loadDataset(c.dataset_name, { splits: c.splits, skipBadRows: c.skip_bad_rows, testSplitRatio: c.test_split_ratio, seed: c.seed });
  const template = chat.template ?? chat.tokenizer.chatTemplate;
  const decoder = createDecoder(model);
  const eos = [chat.tokenizer.eosTokenId].filter((id): id is number => id !== undefined);
  for (const result of out) {
    const split = rows.get(result.split)!;
    const format = detectFormat(split.columns, split.rows.slice(0, 5), { datasetTextField: c.dataset_text_field });
    let scored = 0;
    let hits = 0;
    for (const [i, row] of split.rows.entries()) {
      const pa = promptAndAnswer(toExample(row, format, split.origins[i]!));
      if (pa === undefined) continue;
      let prompt: string;
      if (pa.messages !== undefined) {
        if (template === undefined) throw new TunaError("CONFIG_INVALID", `${formatOrigin(split.origins[i]!)} is a conversation but there is no chat template; set chat_template_format.`);
        prompt = renderChatTemplate(template, pa.messages, { ...templateVariables(chat.tokenizer), addGenerationPrompt: true });
      } else {
        prompt = pa.text!;
      }
      const ids = chat.tokenizer.encode(prompt, { addSpecialTokens: false });
      const g = await generate(decoder, ids, { maxNewTokens: o.maxNewTokens, eosTokenIds: eos, sampling: GREEDY, rng: createRng(0) });
      const tokens = g.finishReason === "eos" ? g.tokens.slice(0, -1) : g.tokens;
      const reply = chat.tokenizer.decode(tokens, { skipSpecialTokens: true }).trim();
      const answer = pa.answer.trim();
      scored++;
      if (o.metric === "exact_match" ? reply === answer : reply.includes(answer)) hits++;
    }
    if (scored > 0) result.metric = { name: o.metric, value: hits / scored, examples: scored };
  }
  return out;
}
