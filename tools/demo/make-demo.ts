// Generates examples/demo: the character tokenizer, the reversal dataset, a base model pretrained from
// scratch by tuna's trainer, and a README with the measured accuracies. `npx tsx tools/demo/make-demo.ts`
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { writeRandomModel } from "../../src/hf/random-init.ts";
import { loadTokenizer } from "../../src/tokenizer/load.ts";
import { createRng } from "../../src/util/random.ts";
import { exactMatch } from "./greedy.ts";
import { demoConfigJson, openDemoModel, saveModelFolder } from "./model.ts";
import { demoReadme, type Measurements } from "./readme.ts";
import { DEMO } from "./settings.ts";
import { BASE_TASKS, REVERSE_TASK, chatToSequence, distinctWords, randomWord, taskRow, toJsonl, type ChatRow } from "./tasks.ts";
import { writeDemoTokenizer } from "./tokenizer.ts";
import { runTraining, trainerSettings } from "./train-demo.ts";
import type { LogEntry } from "../../src/train/trainer.ts";

const started = performance.now();
const { values } = parseArgs({ options: { out: { type: "string", default: "examples/demo" } } });
const out = values.out;
const modelDir = join(out, "base-model");
const dataDir = join(out, "data");
await mkdir(modelDir, { recursive: true });
await mkdir(dataDir, { recursive: true });
const log = (line: string): void => {
  console.log(line);
};
const percent = (x: number): string => `${(100 * x).toFixed(0)}%`;
const logLoss = (e: LogEntry): void => {
  if (e["loss"] !== undefined) log(`  step ${e.step}: loss ${e["loss"].toFixed(4)}`);
};

// 1. Tokenizer: one token per character, ChatML special tokens.
await writeDemoTokenizer(modelDir);
const tok = await loadTokenizer(modelDir);
const padTokenId = tok.padTokenId!;
const config = demoConfigJson(tok.size, DEMO.shape);

// 2. The reversal dataset: disjoint train and test words. Pretraining never sees a test word.
const { minLength, maxLength } = DEMO.words;
const rng = createRng(DEMO.seed);
const testWords = distinctWords(rng, DEMO.words.test, minLength, maxLength);
const trainWords = distinctWords(rng, DEMO.words.train, minLength, maxLength, new Set(testWords));
const testRows = testWords.map((w) => taskRow(REVERSE_TASK, w, rng));
const trainRows = trainWords.map((w) => taskRow(REVERSE_TASK, w, rng));
await writeFile(join(dataDir, "train.jsonl"), toJsonl(trainRows));
await writeFile(join(dataDir, "test.jsonl"), toJsonl(testRows));
log(`data: ${trainRows.length} train rows, ${testRows.length} test rows in ${dataDir}`);

// 3. Pretraining: full training of a random-init Llama on the base task mix, in ChatML.
const preRng = createRng(DEMO.seed + 1);
const heldOut = new Set(testWords);
const preRows: ChatRow[] = [];
while (preRows.length < DEMO.pretrain.run.steps * DEMO.pretrain.run.batchSize) {
  const w = randomWord(preRng, minLength, maxLength);
  if (!heldOut.has(w)) preRows.push(taskRow(BASE_TASKS[DEMO.pretrain.tasks[preRows.length % DEMO.pretrain.tasks.length]!]!, w, preRng));
}
const initDir = await mkdtemp(join(tmpdir(), "tuna-demo-init-"));
await writeRandomModel(initDir, config, { seed: DEMO.seed, dtype: "F32", hfInit: true });
const { model: pretrained } = await openDemoModel(initDir, { mode: "full" });
await rm(initDir, { recursive: true, force: true });
log(`pretraining: ${preRows.length} rows of ${[...new Set(DEMO.pretrain.tasks)].join(", ")}`);
const pretrain = await runTraining(pretrained, preRows.map((r, i) => chatToSequence(tok, r, i)), trainerSettings(DEMO.pretrain.run, padTokenId), logLoss);
await saveModelFolder(pretrained, modelDir, config, "F32");
log(`pretraining: ${pretrain.steps} steps in ${pretrain.wallSeconds.toFixed(0)} s (${pretrain.tokensPerSecond.toFixed(0)} tokens/s)`);

// 4. The base model: good at its own tasks on unseen words, near 0% on reversal.
const base = (await openDemoModel(modelDir, { mode: "full" })).model;
const skills: Record<string, number> = {};
for (const name of new Set(DEMO.pretrain.tasks)) {
  const rows = testWords.map((w) => taskRow(BASE_TASKS[name]!, w, preRng));
  skills[name] = (await exactMatch(base, tok, rows)).accuracy;
  log(`base model, ${name} on held-out words: ${percent(skills[name])}`);
}
const before = await exactMatch(base, tok, testRows);
log(`base model, reverse on test.jsonl: ${percent(before.accuracy)}`);

// 5. Validation of the demo: a short LoRA fine-tune on train.jsonl must make reversal work.
const { model: tuned } = await openDemoModel(modelDir, { mode: "lora", lora: DEMO.lora.lora, seed: DEMO.lora.seed });
log(`LoRA fine-tune: r ${DEMO.lora.lora.r}, ${DEMO.lora.steps} steps, lr ${DEMO.lora.learningRate}`);
const lora = await runTraining(tuned, trainRows.map((r, i) => chatToSequence(tok, r, i)), trainerSettings(DEMO.lora, padTokenId), logLoss);
const after = await exactMatch(tuned, tok, testRows);
log(`LoRA fine-tune: ${lora.steps} steps in ${lora.wallSeconds.toFixed(0)} s (${lora.tokensPerSecond.toFixed(0)} tokens/s)`);
log(`fine-tuned model, reverse on test.jsonl: ${percent(after.accuracy)}`);

// 6. README with what was measured.
const shown = 6;
const measurements: Measurements = {
  pretrain,
  skills,
  before: before.accuracy,
  after: after.accuracy,
  lora,
  baseAnswers: before.answers.slice(0, shown),
  tunedAnswers: after.answers.slice(0, shown),
  totalSeconds: (performance.now() - started) / 1000,
};
await writeFile(join(out, "README.md"), demoReadme(measurements));
log(`wrote ${join(out, "README.md")}`);
// The demo's contract: the base model cannot reverse, the short LoRA run teaches it.
if (before.accuracy > DEMO.contract.maxBefore || after.accuracy < DEMO.contract.minAfter) {
  console.error(`the demo misses its contract: reverse ${percent(before.accuracy)} before (max ${percent(DEMO.contract.maxBefore)}), ${percent(after.accuracy)} after (min ${percent(DEMO.contract.minAfter)})`);
  process.exitCode = 1;
}
