// Data-pipeline benchmark: an ultrachat-sized synthetic chat corpus (10,000 conversations, ~15M tokens) prepared
// as `tuna train --chat_template_format none --assistant_only_loss true --packing true --max_seq_length 2048` does.
// `npm run bench:data [-- --conversations N --threads N --no-stages --keep]`. Not part of the test suite.
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { availableParallelism, cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { parseTrainArgs } from "../../src/config/index.ts";
import { renderAssistantSpans } from "../../src/data/assistant-spans.ts";
import { writePreparedCache } from "../../src/data/cache.ts";
import { setupChatFormat } from "../../src/data/chat-format.ts";
import { datasetFingerprint } from "../../src/data/fingerprint.ts";
import { detectFormat, toExample } from "../../src/data/formats.ts";
import { packBfd } from "../../src/data/pack.ts";
import { prepareDatasets, type PrepareOptions } from "../../src/data/prepare.ts";
import { loadDataset } from "../../src/data/sources/load.ts";
import { TOKENIZE_JOB_URL, tokenizeChunk, type TokenizeChunk } from "../../src/data/tokenize-job.ts";
import { tokenizeExample } from "../../src/data/tokenize.ts";
import { trainPrepareOptions } from "../../src/data/train-options.ts";
import type { Example, TokenizedExample } from "../../src/data/types.ts";
import { runInWorkers } from "../../src/util/worker-pool.ts";
import { readModelConfig } from "../../src/hf/folder.ts";
import { renderChatTemplate, type ChatMessage } from "../../src/tokenizer/chat-template.ts";
import { loadTokenizer, type LoadedTokenizer } from "../../src/tokenizer/load.ts";
import { createRng, type Rng } from "../../src/util/random.ts";

const { values } = parseArgs({
  options: {
    conversations: { type: "string", default: "10000" },
    "target-tokens": { type: "string", default: "15000000" },
    threads: { type: "string", default: String(availableParallelism()) },
    seed: { type: "string", default: "1" },
    "no-stages": { type: "boolean", default: false },
    keep: { type: "boolean", default: false },
  },
});
const CONVERSATIONS = Number(values.conversations);
const TARGET_TOKENS = Number(values["target-tokens"]);
const THREADS = Number(values.threads);
const MODEL = "examples/tiny-llama";
const TRAIN_FLAGS = ["--chat_template_format", "none", "--assistant_only_loss", "true", "--packing", "true", "--max_seq_length", "2048"];

// ---- the corpus: an order-1 word Markov chain over a few paragraphs of plain English, shaped like ultrachat
// (a question, a long answer, follow-ups; sometimes a system prompt, numbered lists and paragraphs).
const SEED_TEXT = `
The best way to learn a new language is to use it every day, even for a few minutes. Start with the words you need
most often, and practice them in short sentences. When you make a mistake, write down the correct form and try again
the next day. Many people find that reading simple stories helps them remember new words, because the context gives
each word a meaning. It is also useful to listen to native speakers, for example in podcasts or films with subtitles.
Cooking at home can save money and it is often healthier than eating out. A simple meal of rice, beans and vegetables
takes about thirty minutes to prepare. First, rinse the rice and put it in a pot with twice as much water. While the
rice is cooking, chop an onion and two cloves of garlic, then fry them in a little oil until they are soft. Add the
beans, a pinch of salt and some spices, and let everything simmer for ten minutes. Serve the beans over the rice.
In computer science, an algorithm is a sequence of steps that solves a problem. A good algorithm is correct, which
means it gives the right answer for every input, and efficient, which means it does not waste time or memory. For
example, binary search finds an item in a sorted list by comparing it with the middle element and discarding half of
the list at each step. This is much faster than checking every element, especially when the list is very large.
The history of the city goes back more than two thousand years. It was founded as a small trading post on the river,
and it grew quickly because merchants could bring goods from the coast. During the middle ages the city built strong
walls and a large cathedral, which still attracts many visitors today. In the nineteenth century new factories and
railways changed the economy, and the population doubled in only a few decades.
Climate change is one of the most important challenges of our time. Rising temperatures affect weather patterns,
sea levels and the lives of millions of people. Scientists agree that reducing greenhouse gas emissions is necessary,
and there are many ways to do it: using renewable energy, improving public transport, and making buildings more
efficient. Individuals can also help by wasting less food and choosing products that last longer.
When you plan a trip, it is a good idea to make a list of the things you want to see and the places where you will
stay. Check the weather before you leave and pack clothes for rain as well as sun. If you travel by train, book your
tickets early, because prices often rise closer to the date. Remember to keep a copy of your passport and your
insurance documents in a safe place, and tell a friend or a family member about your plans.
Regular exercise improves both physical and mental health. Walking for half an hour a day lowers the risk of heart
disease, and it can also reduce stress and improve sleep. You do not need expensive equipment to stay active: you
can climb the stairs instead of taking the elevator, ride a bicycle to work, or join a local sports club. The most
important thing is to choose an activity you enjoy, so that you will keep doing it over time.
A strong essay has a clear structure. In the introduction you present the topic and state your main argument. Each
paragraph of the body should support that argument with evidence, such as facts, examples or quotations, and explain
why the evidence matters. The conclusion summarizes the main points and shows how they answer the original question.
Before you submit the essay, read it again carefully and correct any errors in spelling or grammar.
Could you explain how this works in more detail? What are the main advantages and disadvantages? Why is it important
for small businesses? How long does it usually take, and what should I do first? Can you give me some examples?
`;

const QUESTION_OPENERS = ["Can you explain", "What is the best way to", "How do I", "Could you write a short guide on", "Why does", "Please summarize"];
const SYSTEM_PROMPTS = ["You are a helpful assistant.", "You are a friendly tutor who explains things step by step.", "Answer clearly and concisely."];

interface Chain {
  next: Map<string, string[]>;
  starts: string[];
}

function buildChain(text: string): Chain {
  const words = text.split(/\s+/).filter((w) => w.length > 0);
  const next = new Map<string, string[]>();
  const starts: string[] = [words[0]!];
  for (let i = 0; i + 1 < words.length; i++) {
    const w = words[i]!;
    const list = next.get(w) ?? [];
    list.push(words[i + 1]!);
    next.set(w, list);
    if (/[.?!]$/.test(w)) starts.push(words[i + 1]!);
  }
  return { next, starts };
}

const pick = <T>(rng: Rng, items: readonly T[]): T => items[Math.floor(rng.uniform() * items.length)]!;

function sentence(chain: Chain, rng: Rng): string[] {
  const out = [pick(rng, chain.starts)];
  while (out.length < 40) {
    const last = out.at(-1)!;
    if (/[.?!]$/.test(last) && out.length >= 5) return out;
    out.push(pick(rng, chain.next.get(last) ?? chain.starts));
  }
  out[out.length - 1] = out.at(-1)!.replace(/[,:;]?$/, ".");
  return out;
}

/** About `words` words of prose: sentences, a paragraph break every few, sometimes a numbered list. */
function prose(chain: Chain, rng: Rng, words: number, lists: boolean): string {
  const parts: string[] = [];
  let count = 0;
  let inParagraph = 0;
  while (count < words) {
    if (lists && inParagraph === 0 && rng.uniform() < 0.25) {
      const items = 3 + Math.floor(rng.uniform() * 4);
      const lines: string[] = [];
      for (let i = 1; i <= items; i++) {
        const s = sentence(chain, rng);
        count += s.length;
        lines.push(`${i}. ${s.join(" ")}`);
      }
      parts.push(lines.join("\n"), "\n\n");
      continue;
    }
    const s = sentence(chain, rng);
    count += s.length;
    parts.push(s.join(" "));
    inParagraph++;
    if (inParagraph >= 3 && rng.uniform() < 0.35) {
      parts.push("\n\n");
      inParagraph = 0;
    } else parts.push(" ");
  }
  return parts.join("").trim();
}

/** One conversation: 3-6 user/assistant turns; `scale` stretches the answers (about 100 * scale words each). */
function conversation(chain: Chain, rng: Rng, scale: number): ChatMessage[] {
  const messages: ChatMessage[] = [];
  if (rng.uniform() < 0.2) messages.push({ role: "system", content: pick(rng, SYSTEM_PROMPTS) });
  const turns = 3 + Math.floor(rng.uniform() * 4);
  for (let t = 0; t < turns; t++) {
    const question = `${pick(rng, QUESTION_OPENERS)} ${sentence(chain, rng).join(" ").replace(/[.!]$/, "?")}`;
    const context = rng.uniform() < 0.4 ? ` ${prose(chain, rng, 10 + rng.uniform() * 30, false)}` : "";
    messages.push({ role: "user", content: question + context });
    messages.push({ role: "assistant", content: prose(chain, rng, Math.max(5, scale * 100 * (0.4 + 1.2 * rng.uniform())), true) });
  }
  return messages;
}

function corpus(count: number, scale: number, seed: number): ChatMessage[][] {
  const chain = buildChain(SEED_TEXT);
  const rng = createRng(seed);
  return Array.from({ length: count }, () => conversation(chain, rng, scale));
}

/** Tokens of conversations rendered by the tokenizer's template (what the pipeline tokenizes, before truncation). */
function renderedTokens(tokenizer: LoadedTokenizer, template: string, conversations: ChatMessage[][]): number {
  let n = 0;
  for (const messages of conversations) n += tokenizer.encode(renderChatTemplate(template, messages), { addSpecialTokens: false }).length;
  return n;
}

const seconds = (from: number): number => (performance.now() - from) / 1000;

// ---- setup
const rootDir = await mkdtemp(join(tmpdir(), "tuna-bench-data-"));
const dataFile = join(rootDir, "ultrachat-like.jsonl");
const { vocabSize, modelType } = await readModelConfig(MODEL);
const chat = setupChatFormat(await loadTokenizer(MODEL), "none", vocabSize);
const template = chat.template!;
const wordEncoder = chat.tokenizer.wordEncoder !== undefined;
console.log(`machine: ${cpus().length} x ${cpus()[0]?.model ?? "cpu"}, node ${process.version}, worker threads ${THREADS}`);

// Calibrate the answer length on a sample so the whole corpus lands near TARGET_TOKENS.
let scale = 10;
const SAMPLE = Math.min(200, CONVERSATIONS);
for (let i = 0; i < 2; i++) {
  const perConversation = renderedTokens(chat.tokenizer, template, corpus(SAMPLE, scale, 1000 + i)) / SAMPLE;
  scale *= TARGET_TOKENS / CONVERSATIONS / perConversation;
}
let started = performance.now();
const conversations = corpus(CONVERSATIONS, scale, Number(values.seed));
await writeFile(dataFile, conversations.map((messages) => JSON.stringify({ messages })).join("\n") + "\n");
console.log(`corpus: ${CONVERSATIONS} conversations, ${((await stat(dataFile)).size / 1e6).toFixed(1)} MB JSONL, answer scale ${scale.toFixed(2)}, generated in ${seconds(started).toFixed(1)} s`);

const resolved = await parseTrainArgs(["--model_name_or_path", MODEL, "--dataset_name", dataFile, "--splits", "train", "--output_dir", join(rootDir, "run"), ...TRAIN_FLAGS]);
const options: PrepareOptions = { ...trainPrepareOptions(resolved.config, { dir: MODEL, vocabSize, modelType }), threads: THREADS };

// ---- end to end: cold (empty cache), then warm (cache hit)
started = performance.now();
// CPU time of the whole process, worker threads included: on a shared machine it moves less than wall time.
const cpuBefore = process.cpuUsage();
const cold = (await prepareDatasets(options)).get("train")!;
const coldSeconds = seconds(started);
const coldCpu = process.cpuUsage(cpuBefore);
const coldCpuSeconds = (coldCpu.user + coldCpu.system) / 1e6;
started = performance.now();
const warm = (await prepareDatasets(options)).get("train")!;
const warmSeconds = seconds(started);
if (cold.fromCache || !warm.fromCache) throw new Error("expected a cold run then a cache hit");
const s = cold.stats;

// ---- where the cold run's time goes: the cheap stages timed again on their own, tokenizing is the rest
// (timing it again would double the benchmark's run time); then one tokenizer thread looked at closely.
const stages: [string, number][] = [];
let perThread: { renderSpans: number; encode: number; tokenizeExample: number; tokens: number } | undefined;
if (!values["no-stages"]) {
  const time = async <T>(name: string, f: () => Promise<T> | T): Promise<T> => {
    const t0 = performance.now();
    const out = await f();
    stages.push([name, seconds(t0)]);
    return out;
  };
  const d = options.data;
  const rows = (await time("load (JSONL parse)", () => loadDataset(d.datasetName, { splits: d.splits, seed: d.seed }))).get("train")!;
  await time("fingerprint (hash files)", () => datasetFingerprint({ files: [{ path: dataFile }, ...options.tokenizerFiles.map((path) => ({ path }))], data: d }));
  const examples: Example[] = await time("normalize rows", () => {
    const format = detectFormat(rows.columns, rows.rows.slice(0, 5), { datasetTextField: d.datasetTextField });
    return rows.rows.map((row, i) => toExample(row, format, rows.origins[i]!));
  });
  // The tokenized examples again, as the cold run's packed documents (BFD keeps each example whole).
  const documents: TokenizedExample[] = [];
  for (const seq of cold.sequences) {
    let offset = 0;
    seq.docLengths.forEach((length, i) => {
      const range = [offset, offset + length] as const;
      documents.push({ inputIds: seq.inputIds.subarray(...range), trained: seq.trained.subarray(...range), row: seq.rows[i]!, truncatedTokens: 0 });
      offset += length;
    });
  }
  documents.sort((a, b) => a.row - b.row);
  const sequences = await time("pack (BFD)", () => packBfd(documents, d.maxLength, { overflow: "truncate" }));
  await time("cache write", () => writePreparedCache(join(rootDir, "stage-cache"), "0".repeat(64), { sequences, stats: s, meta: {} }));
  const measured = stages.reduce((sum, [, sec]) => sum + sec, 0);
  // prepare.ts tokenizes in-process below 2000 examples (WORKER_THRESHOLD) or with one thread.
  const onWorkers = examples.length >= 2000 && THREADS > 1;
  stages.splice(3, 0, [`tokenize + mask, ${onWorkers ? `${THREADS} workers` : "in-process"} (rest of cold run)`, coldSeconds - measured]);
  const oneEach: TokenizeChunk[] = examples.slice(0, THREADS).map((e, i) => ({ recipe: options.recipe, examples: [e], firstRow: i }));
  await time("(worker start-up: spawn, tsx, tokenizer)", () => runInWorkers<typeof tokenizeChunk>(TOKENIZE_JOB_URL, "tokenizeChunk", oneEach, THREADS));

  // One thread, on the main thread: how a tokenizer thread spends its time on 100 conversations.
  const sample = examples.slice(0, 100).filter((e): e is Extract<Example, { kind: "conversation" }> => e.kind === "conversation");
  const ctx = { ...options.recipe.options, tokenizer: chat.tokenizer, template, row: 0 };
  await tokenizeChunk({ recipe: options.recipe, examples: sample.slice(0, 5), firstRow: 0 }); // warm-up
  let t0 = performance.now();
  const rendered = sample.map((e) => renderAssistantSpans(template, e.messages, {}, "row 0").text);
  const renderSpans = seconds(t0);
  t0 = performance.now();
  const whole = rendered.map((text) => chat.tokenizer.encode(text, { addSpecialTokens: false }));
  const encode = seconds(t0);
  t0 = performance.now();
  for (const e of sample) tokenizeExample(e, ctx);
  const tokens = whole.reduce((sum, ids) => sum + ids.length, 0);
  perThread = { renderSpans, encode, tokenizeExample: seconds(t0), tokens };
}

// ---- report
const coldTokensPerSecond = s.tokens / coldSeconds;
const lines: [string, string][] = [
  ["conversations", String(s.rows)],
  ["tokens (after truncation)", `${s.tokens} (${s.trainedTokens} trained, ${s.truncated} truncated examples, ${s.dropped} dropped)`],
  ["sequences (2048, BFD)", `${s.sequences}, packing efficiency ${(100 * s.packingEfficiency).toFixed(1)}%`],
  ["cold run (prepareDatasets)", `${coldSeconds.toFixed(2)} s, ${Math.round(coldTokensPerSecond)} tokens/s end to end`],
  ["cold run CPU time (all threads)", `${coldCpuSeconds.toFixed(2)} s, ${Math.round(s.tokens / coldCpuSeconds)} tokens per CPU second`],
  ["warm run (cache hit)", `${warmSeconds.toFixed(2)} s`],
  ...stages.map(([name, sec]): [string, string] => [`  stage: ${name}`, `${sec.toFixed(2)} s`]),
];
if (perThread !== undefined) {
  const rate = (sec: number): string => `${Math.round(perThread.tokens / sec)} tokens/s`;
  lines.push(
    ["  1 thread: render + assistant spans", `${perThread.renderSpans.toFixed(2)} s (${rate(perThread.renderSpans)})`],
    ["  1 thread: tokenizer.encode", `${perThread.encode.toFixed(2)} s (${rate(perThread.encode)}), word encoder ${wordEncoder ? "on" : "off"}`],
    ["  1 thread: tokenizeExample (all)", `${perThread.tokenizeExample.toFixed(2)} s (${rate(perThread.tokenizeExample)})`],
  );
}
const width = Math.max(...lines.map(([k]) => k.length));
for (const [k, v] of lines) console.log(`${k.padEnd(width)}  ${v}`);
console.log(
  JSON.stringify({
    bench: "data",
    conversations: s.rows,
    tokens: s.tokens,
    trainedTokens: s.trainedTokens,
    sequences: s.sequences,
    threads: THREADS,
    wordEncoder,
    coldSeconds: Number(coldSeconds.toFixed(3)),
    coldCpuSeconds: Number(coldCpuSeconds.toFixed(3)),
    coldTokensPerSecond: Math.round(coldTokensPerSecond),
    warmSeconds: Number(warmSeconds.toFixed(3)),
    stages: Object.fromEntries(stages.map(([k, v]) => [k, Number(v.toFixed(3))])),
    ...(perThread === undefined ? {} : { perThread }),
  }),
);
if (values.keep) console.log(`kept ${rootDir}`);
else await rm(rootDir, { recursive: true, force: true });
