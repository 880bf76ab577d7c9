// A quick greedy decoder for measuring the demo: every prompt of a set advances together, one full
// forward per new token over the whole prefix (no KV cache; the prompts are ~40 tokens), argmax at the end.
import { batchFromDocuments } from "../../src/data/batch.ts";
import { forward, freeBatch, lastLogits, uploadBatch, type CausalLm } from "../../src/model/causal-lm/model.ts";
import type { LoadedTokenizer } from "../../src/tokenizer/load.ts";
import { TunaError } from "../../src/util/errors.ts";
import { promptIds, type ChatRow } from "./tasks.ts";

export interface GreedyOptions {
  eosTokenId: number;
  maxNewTokens: number;
}

/** Greedy continuations of each prompt, up to (not including) eos or maxNewTokens tokens. */
export async function greedyGenerate(model: CausalLm, prompts: readonly number[][], options: GreedyOptions): Promise<number[][]> {
  const V = model.params.cfg.vocabSize;
  const outputs: number[][] = prompts.map(() => []);
  const active = new Set(prompts.map((_, i) => i));
  for (let step = 0; step < options.maxNewTokens && active.size > 0; step++) {
    const order = [...active];
    const docs = order.map((i) => ({ inputIds: [...prompts[i]!, ...outputs[i]!] }));
    const batch = uploadBatch(model, batchFromDocuments(docs));
    await forward(model, batch);
    const logits = await lastLogits(model); // (N, V)
    freeBatch(model, batch);
    let end = 0;
    order.forEach((i, d) => {
      end += docs[d]!.inputIds.length;
      const row = logits.subarray((end - 1) * V, end * V);
      let best = 0;
      for (let v = 1; v < V; v++) if (row[v]! > row[best]!) best = v;
      if (best === options.eosTokenId) active.delete(i);
      else outputs[i]!.push(best);
    });
  }
  return outputs;
}

export interface Scored {
  prompt: string;
  expected: string;
  got: string;
}

/** Exact-match accuracy of greedy answers on single-turn rows; returns every answer for inspection. */
export async function exactMatch(model: CausalLm, tok: LoadedTokenizer, rows: readonly ChatRow[], maxNewTokens = 16): Promise<{ accuracy: number; answers: Scored[] }> {
  const eosTokenId = tok.eosTokenId;
  if (eosTokenId === undefined) throw new TunaError("INTERNAL", "the demo tokenizer has no eos token");
  const prompts = rows.map((r) => promptIds(tok, r.messages[0]!.content));
  const outputs = await greedyGenerate(model, prompts, { eosTokenId, maxNewTokens });
  const answers = rows.map((r, i) => ({ prompt: r.messages[0]!.content, expected: r.messages[1]!.content, got: outputs[i]!.length === 0 ? "" : tok.decode(outputs[i]!) }));
  const correct = answers.filter((a) => a.got === a.expected).length;
  return { accuracy: rows.length === 0 ? 0 : correct / rows.length, answers };
}
