// `tuna demo dpo`: preference training on the shipped tiny chat model. The base model (pretrained on copy-like
// tasks) prefers copying a word to reversing it; a short DPO run on pairs "reverse: <word>" -> chosen: the
// reversed word, rejected: the word copied (examples/demo/preference) turns that around. Prints, on 100
// held-out words, how often the model gives the chosen answer the higher probability, and the exact-match
// accuracy of its greedy answer, before and after.
import { join } from "node:path";
import { parseTrainArgs } from "../../config/index.ts";
import { toModelBatch } from "../../data/batches.ts";
import { preferenceText, tokenizePair } from "../../data/preference.ts";
import { readDataFile } from "../../data/sources/file-rows.ts";
import { asTrainingModel } from "../../model/causal-lm/model.ts";
import { pairsOf, sequenceLogp } from "../../train/dpo/objective.ts";
import { runTraining } from "../../train/recipe.ts";
import { signalExitCode } from "../../train/interrupt.ts";
import { packageRoot } from "../../util/package-root.ts";
import type { CliOutput } from "../output.ts";
import { openGenerationSession } from "./generate.ts";
import { chatTemplateFor, type GenerationSession } from "../../train/generation-session.ts";
import { exactMatch } from "./demo.ts";
import { withDpoDefaults } from "./dpo-config.ts";
import { addDemoResults } from "../../train/demo-report.ts";
import { progressStream } from "./train.ts";
import type { Row } from "../../data/types.ts";

export const DPO_DEMO_HELP = `usage: tuna demo dpo [--output_dir DIR] [--max_steps N] [any tuna dpo flag]

Preference training (DPO, LoRA) of the shipped tiny chat model on CPU, through the same recipe as
\`tuna dpo examples/demo/dpo.yaml\`: pairs "reverse: <word>" with the reversed word chosen and the word
copied rejected. Prints, on 100 held-out words, how often the model ranks the chosen answer above the
rejected one, and its greedy exact-match accuracy, before and after. Extra flags override dpo.yaml.`;

/** The share of pairs whose chosen completion the model gives a higher log-probability than the rejected one. */
async function preferenceAccuracy(session: GenerationSession, rows: readonly Row[]): Promise<number> {
  const template = chatTemplateFor(session, undefined);
  const options = { maxPromptLength: null, maxCompletionLength: null, maxLength: null, truncationMode: "keep_end" as const, dropLong: false, skipBad: false };
  const sequences = rows.map((row, i) => tokenizePair(preferenceText(row, `pair ${i}`, session.tokenizer, template), session.tokenizer, options, i, `pair ${i}`).sequence);
  const model = asTrainingModel(session.decoder.model);
  let preferred = 0;
  for (let start = 0; start < sequences.length; start += 25) {
    const batch = toModelBatch({ sequenceIndices: Array.from({ length: Math.min(25, sequences.length - start) }, (_, k) => start + k), padded: false }, sequences);
    const device = model.upload(batch);
    const r = await model.forward(device);
    model.free(device);
    for (const p of pairsOf(batch)) if (sequenceLogp(r.tokenLosses, p.chosen) > sequenceLogp(r.tokenLosses, p.rejected)) preferred++;
  }
  return preferred / rows.length;
}

export async function dpoDemoCommand(args: string[], output: CliOutput): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    output.out(DPO_DEMO_HELP);
    return 0;
  }
  const demo = join(packageRoot(), "examples", "demo");
  const baseModel = join(demo, "base-model");
  const { rows } = await readDataFile(join(demo, "preference", "test.jsonl"), { display: "test.jsonl", skipBadRows: false });
  const resolved = withDpoDefaults(await parseTrainArgs([join(demo, "dpo.yaml"), "--model_name_or_path", baseModel, "--dataset_name", join(demo, "preference"), ...args]));
  const started = performance.now();
  const qa = rows.map((r) => ({ prompt: (r["prompt"] as { content: string }[])[0]!.content, answer: (r["chosen"] as { content: string }[])[0]!.content }));

  output.out(`tuna demo dpo: teach ${baseModel} to prefer reversing a word over copying it; measured on ${rows.length} held-out words`);
  const base = await openGenerationSession(baseModel, {}, resolved.config.device);
  const before = { preference: await preferenceAccuracy(base, rows), ...(await exactMatch(base, qa)) };
  output.out(`before: prefers the reversed word in ${(100 * before.preference).toFixed(0)}% of pairs; greedy answer reversed exactly: ${(100 * before.accuracy).toFixed(0)}%`);

  const result = await runTraining(resolved, { out: (t) => { output.out(t); }, err: (t) => { output.err(t); }, progress: progressStream(output) }, "dpo");
  if (result.interrupted !== undefined) {
    output.err(`tuna demo dpo: interrupted (${result.interrupted.signal}) after step ${result.globalStep}; saved ${result.interrupted.checkpoint}.`);
    return signalExitCode(result.interrupted.signal);
  }
  const tuned = await openGenerationSession(baseModel, { adapter: result.outputDir }, resolved.config.device);
  const after = { preference: await preferenceAccuracy(tuned, rows), ...(await exactMatch(tuned, qa)) };
  output.out(`after:  prefers the reversed word in ${(100 * after.preference).toFixed(0)}% of pairs; greedy answer reversed exactly: ${(100 * after.accuracy).toFixed(0)}%  (${result.globalStep} steps, train_loss ${result.trainLoss.toFixed(4)})`);
  output.out("\nsample answers (user -> base model | after DPO):");
  for (let i = 0; i < Math.min(5, qa.length); i++) {
    output.out(`  ${qa[i]!.prompt.padEnd(20)} -> ${JSON.stringify(before.replies[i])} | ${JSON.stringify(after.replies[i])}   (chosen ${JSON.stringify(qa[i]!.answer)})`);
  }
  await addDemoResults(result.outputDir, `tuna demo dpo: prefer reversing (${baseModel})`, resolved.config, result.logHistory, {
    heldout_preference_accuracy_before: before.preference,
    heldout_preference_accuracy_after: after.preference,
    heldout_exact_match_before: before.accuracy,
    heldout_exact_match_after: after.accuracy,
  });
  output.out(`\nadapter, report.html (reward margin curve, held-out results) and metrics.jsonl in ${result.outputDir}; total ${((performance.now() - started) / 1000).toFixed(0)} s.`);
  return 0;
}
