// examples/demo/README.md as the generator writes it: what the files are, how they were made, and the
// accuracies and times this run measured (so the numbers always match the committed files).
import { cpus } from "node:os";
import { DEMO } from "./settings.ts";
import { BASE_TASKS } from "./tasks.ts";
import type { Scored } from "./greedy.ts";
import type { RunReport } from "./train-demo.ts";

export interface Measurements {
  pretrain: RunReport;
  /** Base model's exact-match accuracy per pretraining task, on the test words. */
  skills: Record<string, number>;
  before: number;
  after: number;
  lora: RunReport;
  baseAnswers: Scored[];
  tunedAnswers: Scored[];
  /** The whole generator run, wall seconds. */
  totalSeconds: number;
}

const pct = (x: number): string => `${(100 * x).toFixed(0)}%`;
const secs = (r: RunReport): string => `${r.wallSeconds.toFixed(0)} s wall, ${r.cpuSeconds.toFixed(0)} s CPU`;

function example(name: string): string {
  const word = "planet";
  const { request, answer } = BASE_TASKS[name]!.make(word, { uniform: () => 0.5, normal: () => 0, state: () => [0, 0, 0, 0] });
  return `\`${request}\` -> \`${answer}\``;
}

export function demoReadme(m: Measurements): string {
  const s = DEMO.shape;
  const tasks = [...new Set(DEMO.pretrain.tasks)];
  const machine = `${cpus().length} x ${cpus()[0]?.model.trim() ?? "unknown CPU"}`;
  return `# The tuna demo: teach a tiny model to reverse words

Everything here was made by tuna itself, on the CPU, by \`npx tsx tools/demo/make-demo.ts\`
(${(m.totalSeconds / 60).toFixed(1)} minutes on ${machine}; deterministic: fixed seeds, the single-threaded CPU backend).
Do not edit these files by hand; change tools/demo/settings.ts and rerun the generator.

- \`base-model/\`: a Llama-architecture chat model trained from scratch (${s.numLayers} layers, hidden ${s.hiddenSize},
  MLP ${s.intermediateSize}, ${s.numHeads} heads with ${s.numKvHeads} KV heads, tied embeddings, F32), with its tokenizer:
  - \`tokenizer.json\`: one token per character (lowercase letters, digits, space, newline, a few
    punctuation marks) plus \`<unk>\` \`<s>\` \`</s>\` \`<pad>\` \`<|im_start|>\` \`<|im_end|>\`; a BPE model with no merges.
  - \`tokenizer_config.json\`: eos \`<|im_end|>\`, pad \`<pad>\`, no BOS added, the standard ChatML chat template.
- \`data/train.jsonl\` (${DEMO.words.train} rows) and \`data/test.jsonl\` (${DEMO.words.test} rows): the fine-tuning task,
  \`{"messages": [{"role": "user", "content": "reverse: abc"}, {"role": "assistant", "content": "cba"}]}\`,
  words of ${DEMO.words.minLength}-${DEMO.words.maxLength} random letters; no test word appears in train.jsonl or in pretraining.

## How the base model was made

Random init (HF's: normal(0, 0.02), norms 1), then full fine-tuning with tuna's trainer on
${m.pretrain.steps * DEMO.pretrain.run.batchSize} freshly drawn ChatML conversations: ${m.pretrain.steps} steps of ${DEMO.pretrain.run.batchSize}, AdamW lr ${DEMO.pretrain.run.learningRate}
(no weight decay), 5% warmup then cosine, gradient clipping 1, padding-free batches, loss on the
assistant's answer and its \`<|im_end|>\` only. The tasks, with what the base model scores on the
${DEMO.words.test} test words (greedy, exact match):

| task | example | base model |
| --- | --- | --- |
${tasks.map((t) => `| ${t} | ${example(t)} | ${pct(m.skills[t] ?? 0)} |`).join("\n")}

It never sees \`reverse\` nor any reversed answer. \`before\` (the letter in front of a given one) is the
step that reversal repeats: with it in the mix, a short LoRA run learns to chain it.
Pretraining took ${secs(m.pretrain)} (${m.pretrain.tokensPerSecond.toFixed(0)} tokens/s).

Try it: \`node bin/tuna.js generate examples/demo/base-model --chat --prompt "copy: hello"\` answers \`hello\`;
with \`"reverse: hello"\` it answers something else.

## Measured: reversal before and after a LoRA fine-tune

Greedy decoding, exact match on the ${DEMO.words.test} prompts of test.jsonl:

| model | reverse accuracy |
| --- | --- |
| base-model | ${pct(m.before)} |
| base-model + LoRA (r ${DEMO.lora.lora.r}, alpha ${DEMO.lora.lora.alpha}, all-linear, ${m.lora.steps} steps of ${DEMO.lora.batchSize}, lr ${DEMO.lora.learningRate}) | ${pct(m.after)} |

The LoRA fine-tune (tuna's trainer, on train.jsonl) took ${secs(m.lora)} (${m.lora.tokensPerSecond.toFixed(0)} tokens/s),
final training loss ${m.lora.finalLoss.toFixed(3)}. Wall times depend on what else the machine runs; CPU seconds do less.

| prompt | expected | base model | fine-tuned |
| --- | --- | --- | --- |
${m.baseAnswers.map((a, i) => `| \`${a.prompt}\` | \`${a.expected}\` | \`${a.got}\` | \`${m.tunedAnswers[i]?.got ?? ""}\` |`).join("\n")}

## Notes from choosing the settings (tools/demo/settings.ts; measured once, not by this run)

- The LoRA run does not improve smoothly: it sits near 30% (it reverses only the last four letters of a
  word), then jumps to ~100% once it finds the general rule. With the settings above that happened for
  every seed tried (2, 7, 11); with 300-500 steps, lr 2e-3..3e-3, or r 16, some seeds stayed near 30%.
  A \`tuna train\` config for this demo should keep at least this budget (~9600 examples at lr 4e-3).
- A mix without \`before\` (copy, first, last, double, length, rotate) gave a base model that a 300-step
  LoRA run (r 16, lr 3e-3) took to 40% reversal accuracy; this mix reached 60% with it. With copy in
  only 1/6 of the rows, pretraining sat on a loss plateau (~1.7) for all of its 1200 steps. A third
  layer or more \`before\` rows did not make the LoRA run learn faster.
- Hugging Face transformers 5.17 loads \`base-model/\` as it is: the tokenizer round-trips exactly and
  greedy generation gives tuna's answers (copy 100%, reverse 0% on test.jsonl).
`;
}
