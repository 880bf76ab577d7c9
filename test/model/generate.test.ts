// The generation loop on a tiny random model: greedy tokens are the training forward's argmax, stops on
// eos and at max_new_tokens, cache reuse across calls, seeded sampling, HF default resolution, text streaming.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { rm } from "node:fs/promises";
import { dirname } from "node:path";
import { batchFromDocuments } from "../../src/data/batch.ts";
import { createTextStream, generate, resolveGeneration, DEFAULT_MAX_NEW_TOKENS } from "../../src/model/generate.ts";
import type { GenerationConfig } from "../../src/hf/generation-config.ts";
import { createDecoder } from "../../src/model/causal-lm/decode.ts";
import { forward, freeBatch, lastLogits, uploadBatch, type CausalLm } from "../../src/model/causal-lm/model.ts";
import { GREEDY, argmax } from "../../src/model/sampling.ts";
import { createRng } from "../../src/util/random.ts";
import { tinyModel, writeTiny } from "./causal-lm/tiny-model.ts";

let root = "";
let model: CausalLm;
const prompt = [1, 17, 42, 5, 63];

after(async () => {
  if (root !== "") await rm(root, { recursive: true, force: true });
});

async function setup(): Promise<CausalLm> {
  if (root === "") {
    const { dir, cfg } = await writeTiny();
    root = dirname(dir);
    model = await tinyModel(dir, cfg, { mode: "lora" });
  }
  return model;
}

const greedy = (maxNewTokens: number, eosTokenIds: number[] = []): Parameters<typeof generate>[2] => ({
  maxNewTokens,
  eosTokenIds,
  sampling: GREEDY,
  rng: createRng(0),
});

void test("greedy generation is the argmax of the full training forward at every step, streamed in order", async () => {
  const m = await setup();
  const streamed: number[] = [];
  const r = await generate(createDecoder(m), prompt, { ...greedy(8), onToken: (t) => streamed.push(t) });
  assert.equal(r.tokens.length, 8);
  assert.equal(r.finishReason, "length");
  assert.deepEqual(streamed, r.tokens);
  assert.equal(r.promptTokens, prompt.length);
  assert.equal(r.decodeSteps, 7);
  // Independently: one forward over prompt + generated, each generated token the argmax of the row before it.
  const seq = [...prompt, ...r.tokens];
  const batch = uploadBatch(m, batchFromDocuments([{ inputIds: seq }]));
  await forward(m, batch);
  const logits = await lastLogits(m);
  freeBatch(m, batch);
  const V = m.params.cfg.vocabSize;
  r.tokens.forEach((t, i) => {
    const row = prompt.length - 1 + i;
    assert.equal(t, argmax(logits.subarray(row * V, (row + 1) * V)), `new token ${i}`);
  });
});

void test("generation stops right after an eos id, which ends the result; max_new_tokens 0 runs nothing", async () => {
  const m = await setup();
  const free = await generate(createDecoder(m), prompt, greedy(10));
  // The first token that did not occur before it, so the stop can only happen there.
  const k = free.tokens.findIndex((t, i) => i >= 2 && !free.tokens.slice(0, i).includes(t));
  assert.ok(k >= 2, `no fresh token in ${free.tokens.join(",")}`);
  const eos = free.tokens[k]!;
  const stopped = await generate(createDecoder(m), prompt, greedy(10, [999, eos]));
  assert.equal(stopped.finishReason, "eos");
  assert.deepEqual(stopped.tokens, free.tokens.slice(0, k + 1));
  const none = await generate(createDecoder(m), prompt, greedy(0));
  assert.deepEqual(none.tokens, []);
  assert.equal(none.finishReason, "length");
  await assert.rejects(generate(createDecoder(m), [], greedy(3)), /prompt has no tokens/);
});

void test("a later prompt that extends the cached sequence reuses it and continues exactly as a fresh decoder", async () => {
  const m = await setup();
  const decoder = createDecoder(m);
  const first = await generate(decoder, prompt, greedy(6));
  // The next "turn": prompt + the reply + two more tokens; everything but the reply's last token is cached.
  const next = [...prompt, ...first.tokens, 7, 8];
  const reused = await generate(decoder, next, greedy(4));
  assert.equal(reused.reusedTokens, prompt.length + first.tokens.length - 1);
  const fresh = await generate(createDecoder(m), next, greedy(4));
  assert.deepEqual(reused.tokens, fresh.tokens);
  // A prompt that diverges early drops the rest of the cache; the same prompt again recomputes one token.
  const diverged = await generate(decoder, [1, 17, 9], greedy(3));
  assert.equal(diverged.reusedTokens, 2);
  assert.deepEqual(diverged.tokens, (await generate(createDecoder(m), [1, 17, 9], greedy(3))).tokens);
  const again = await generate(decoder, [1, 17, 9], greedy(3));
  assert.equal(again.reusedTokens, 2);
  assert.deepEqual(again.tokens, diverged.tokens);
});

void test("sampling through generate is reproducible per seed", async () => {
  const m = await setup();
  const run = async (seed: number): Promise<number[]> => {
    const r = await generate(createDecoder(m), prompt, { maxNewTokens: 12, eosTokenIds: [], sampling: { doSample: true, temperature: 1.5, topK: 0, topP: 1, repetitionPenalty: 1 }, rng: createRng(seed) });
    return r.tokens;
  };
  assert.deepEqual(await run(5), await run(5));
  assert.notDeepEqual(await run(5), await run(6));
});

const GEN: GenerationConfig = {
  bosTokenId: 1,
  eosTokenIds: [2, 32007],
  padTokenId: undefined,
  doSample: true,
  temperature: 0.6,
  topP: 0.9,
  topK: undefined,
  maxNewTokens: undefined,
  maxLength: undefined,
  repetitionPenalty: undefined,
};

void test("settings resolve as transformers: caller > generation_config.json > GenerationConfig defaults", () => {
  const fromConfig = resolveGeneration({}, GEN, [2], 2);
  assert.deepEqual(fromConfig.sampling, { doSample: true, temperature: 0.6, topK: 50, topP: 0.9, repetitionPenalty: 1 });
  assert.equal(fromConfig.maxNewTokens, DEFAULT_MAX_NEW_TOKENS);
  assert.deepEqual(fromConfig.eosTokenIds, [2, 32007]);
  // A caller's temperature 0 means greedy even when the config samples; flags win field by field.
  const greedyRun = resolveGeneration({ temperature: 0, topK: 5, maxNewTokens: 7 }, GEN, [2], 3);
  assert.equal(greedyRun.sampling.doSample, false);
  assert.equal(greedyRun.sampling.topK, 5);
  assert.equal(greedyRun.maxNewTokens, 7);
  assert.deepEqual(greedyRun.eosTokenIds, [2, 32007, 3]);
  // No generation_config.json: greedy, the model config's eos plus the tokenizer's; a temperature alone turns sampling on.
  const bare = resolveGeneration({}, undefined, [5], 2);
  assert.deepEqual(bare.sampling, { doSample: false, temperature: 1, topK: 50, topP: 1, repetitionPenalty: 1 });
  assert.deepEqual(bare.eosTokenIds, [5, 2]);
  assert.equal(resolveGeneration({ temperature: 0.7 }, undefined, [], undefined).sampling.doSample, true);
  assert.equal(resolveGeneration({ doSample: true }, { ...GEN, doSample: false, temperature: undefined }, [], undefined).sampling.temperature, 1);
  assert.throws(() => resolveGeneration({ topP: 0 }, undefined, [], undefined), /top_p must be in \(0, 1\]/);
});

void test("text streaming emits whole words as they complete, holds back broken characters, and adds up to the full text", () => {
  // A toy detokenizer: pieces joined, with two byte tokens that form "é" only together.
  const pieces: Record<number, string> = { 1: "Hello", 2: " wor", 3: "ld", 4: "!", 5: "\n", 6: "Bye", 7: " ", 8: "caf" };
  const decode = (ids: number[]): string => {
    let s = "";
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id === 90) s += ids[i + 1] === 91 ? "é" : "\uFFFD";
      else if (id !== 91) s += pieces[id]!;
    }
    return s;
  };
  const stream = createTextStream(decode);
  const tokens = [1, 2, 3, 4, 5, 6, 7, 8, 90, 91];
  const chunks = tokens.map((t) => stream.push(t));
  chunks.push(stream.flush());
  assert.deepEqual(chunks, ["", "Hello ", "", "", "world!\n", "", "Bye ", "", "", "", "café"]);
  assert.equal(chunks.join(""), "Hello world!\nBye café");
});
