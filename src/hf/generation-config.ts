// Reads `generation_config.json`: the sampling defaults a model ships with (used by generate/chat).
import { z } from "zod";
import { TunaError } from "../util/errors.ts";

export interface GenerationConfig {
  bosTokenId: number | undefined;
  eosTokenIds: number[];
  padTokenId: number | undefined;
  doSample: boolean;
  temperature: number | undefined;
  topP: number | undefined;
  topK: number | undefined;
  maxNewTokens: number | undefined;
  maxLength: number | undefined;
  repetitionPenalty: number | undefined;
}

const id = z.number().int().nonnegative().nullish();
const schema = z.looseObject({
  bos_token_id: id,
  eos_token_id: z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullish(),
  pad_token_id: id,
  do_sample: z.boolean().nullish(),
  temperature: z.number().nonnegative().nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  top_k: z.number().int().nonnegative().nullish(),
  max_new_tokens: z.number().int().positive().nullish(),
  max_length: z.number().int().positive().nullish(),
  repetition_penalty: z.number().positive().nullish(),
});

export function parseGenerationConfig(json: unknown, where: string): GenerationConfig {
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  - ${i.path.join(".") || "(root)"}: ${i.message}`);
    throw new TunaError("MODEL_INVALID", `${where}: invalid fields:\n${lines.join("\n")}`);
  }
  const g = parsed.data;
  const eos = g.eos_token_id;
  return {
    bosTokenId: g.bos_token_id ?? undefined,
    eosTokenIds: eos == null ? [] : Array.isArray(eos) ? eos : [eos],
    padTokenId: g.pad_token_id ?? undefined,
    doSample: g.do_sample ?? false,
    temperature: g.temperature ?? undefined,
    topP: g.top_p ?? undefined,
    topK: g.top_k ?? undefined,
    maxNewTokens: g.max_new_tokens ?? undefined,
    maxLength: g.max_length ?? undefined,
    repetitionPenalty: g.repetition_penalty ?? undefined,
  };
}
