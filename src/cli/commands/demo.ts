// `tuna demo`: the embedded default run. A tiny chat model (examples/demo/base-model, pretrained by tuna)
// cannot reverse words; a LoRA fine-tune through the normal `tuna train` recipe teaches it on CPU.
// Prints held-out exact-match accuracy before and after, then a few sample chats.
import { join } from "node:path";
import { parseTrainArgs } from "../../config/index.ts";
import { readDataFile } from "../../data/sources/file-rows.ts";
import { createRng } from "../../util/random.ts";
import { TunaError } from "../../util/errors.ts";
import { packageRoot } from "../../util/package-root.ts";
import { generate } from "../../model/generate.ts";
import { runTraining } from "../../train/recipe.ts";
import { signalExitCode } from "../../train/interrupt.ts";
import type { CliOutput } from "../output.ts";
import { openGenerationSession } from "./generate.ts";
import { chatTemplateFor, encodeChat, resolveFor, type GenerationSession } from "../../train/generation-session.ts";
import { progressStream } from "./train.ts";
import { dpoDemoCommand } from "./demo-dpo.ts";
import { addDemoResults } from "../../train/demo-report.ts";

const HELP = `usage: tuna demo [--output_dir DIR] [--max_steps N] [any tuna train flag]
       tuna demo dpo [...]   (preference training; tuna demo dpo --help)

Fine-tunes the shipped tiny chat model (examples/demo/base-model) with LoRA to reverse words, on CPU,
through the same recipe as \`tuna train examples/demo/train.yaml\`; prints the held-out exact-match
accuracy before and after, and sample chats. Extra flags override examples/demo/train.yaml.`;

interface QA {
  prompt: string;
  answer: string;
}

async function heldOut(file: string): Promise<QA[]> {
  const { rows } = await readDataFile(file, { display: file, skipBadRows: false });
  return rows.map((r) => {
    const messages = r["messages"] as { role: string; content: string }[];
    return { prompt: messages[0]!.content, answer: messages[1]!.content };
  });
}

async function reply(session: GenerationSession, template: string, prompt: string): Promise<string> {
  const ids = encodeChat(session, template, [{ role: "user", content: prompt }]);
  const gen = resolveFor(session, { doSample: false, maxNewTokens: 16 });
  const result = await generate(session.decoder, ids, { maxNewTokens: gen.maxNewTokens, eosTokenIds: gen.eosTokenIds, sampling: gen.sampling, rng: createRng(0) });
  const tokens = result.finishReason === "eos" ? result.tokens.slice(0, -1) : result.tokens;
  return session.tokenizer.decode(tokens, { skipSpecialTokens: true }).trim();
}

/** Greedy answers to each prompt, and the share that equal the expected answer exactly. */
export async function exactMatch(session: GenerationSession, rows: readonly QA[]): Promise<{ accuracy: number; replies: string[] }> {
  const template = chatTemplateFor(session, undefined);
  const replies: string[] = [];
  for (const row of rows) replies.push(await reply(session, template, row.prompt));
  return { accuracy: replies.filter((r, i) => r === rows[i]!.answer).length / rows.length, replies };
}

export async function demoCommand(args: string[], output: CliOutput): Promise<number> {
  if (args[0] === "dpo") return dpoDemoCommand(args.slice(1), output);
  if (args.includes("--help") || args.includes("-h")) {
    output.out(HELP);
    return 0;
  }
  const root = packageRoot();
  const demo = join(root, "examples", "demo");
  const baseModel = join(demo, "base-model");
  const rows = await heldOut(join(demo, "data", "test.jsonl"));
  const resolved = await parseTrainArgs([join(demo, "train.yaml"), "--model_name_or_path", baseModel, "--dataset_name", join(demo, "data"), ...args]);
  if (!resolved.config.use_peft_lora) throw new TunaError("CONFIG_INVALID", "tuna demo trains a LoRA adapter; keep use_peft_lora true.");
  const started = performance.now();

  output.out(`tuna demo: teach ${baseModel} to reverse words; accuracy is measured on ${rows.length} held-out words never seen in training`);
  const before = await exactMatch(await openGenerationSession(baseModel, {}, resolved.config.device), rows);
  output.out(`held-out exact match before fine-tuning: ${(100 * before.accuracy).toFixed(1)}%`);

  const result = await runTraining(resolved, { out: (t) => { output.out(t); }, err: (t) => { output.err(t); }, progress: progressStream(output) });
  if (result.interrupted !== undefined) {
    output.err(`tuna demo: interrupted (${result.interrupted.signal}) after step ${result.globalStep}; saved ${result.interrupted.checkpoint}.`);
    return signalExitCode(result.interrupted.signal);
  }
  const tuned = await openGenerationSession(baseModel, { adapter: result.outputDir }, resolved.config.device);
  const after = await exactMatch(tuned, rows);
  output.out(`held-out exact match after fine-tuning:  ${(100 * after.accuracy).toFixed(1)}%  (${result.globalStep} steps, train_loss ${result.trainLoss.toFixed(4)})`);

  output.out("\nsample chats (user -> base model | fine-tuned):");
  for (let i = 0; i < Math.min(5, rows.length); i++) {
    const r = rows[i]!;
    output.out(`  ${r.prompt.padEnd(20)} -> ${JSON.stringify(before.replies[i])} | ${JSON.stringify(after.replies[i])}   (expected ${JSON.stringify(r.answer)})`);
  }
  await addDemoResults(result.outputDir, `tuna demo: reverse words (${baseModel})`, resolved.config, result.logHistory, { heldout_exact_match_before: before.accuracy, heldout_exact_match_after: after.accuracy });
  output.out(`\nadapter, report.html (with the held-out accuracy) and metrics.jsonl in ${result.outputDir}; total ${((performance.now() - started) / 1000).toFixed(0)} s.`);
  output.out(`try it: npx tuna chat ${baseModel} --adapter ${result.outputDir}`);
  return 0;
}
