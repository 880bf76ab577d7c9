// The tuna command line: dispatches `tuna <command> ...` to the command modules (a literal registry)
// and is the only place that turns a thrown TunaError into a message and an exit code.
import { TunaError, isTunaError, errorMessage } from "../util/errors.ts";
import { processOutput, type CliOutput } from "./output.ts";
import { inspectCommand } from "./commands/inspect.ts";
import { doctorCommand } from "./commands/doctor.ts";
import { trainCommand } from "./commands/train.ts";
import { evalCommand } from "./commands/eval.ts";
import { demoCommand } from "./commands/demo.ts";
import { generateCommand } from "./commands/generate.ts";
import { chatCommand } from "./commands/chat.ts";
import { dataCommand } from "./commands/data.ts";
import { launchCommand } from "./commands/launch.ts";
import { mergeCommand } from "./commands/merge.ts";
import { exportCommand } from "./commands/export.ts";
import { planCommand } from "./commands/plan.ts";
import { dpoCommand } from "./commands/dpo.ts";
import { serveCommand } from "./commands/serve.ts";
import { safeText } from "../util/safe-text.ts";
import { TUNA_VERSION } from "../util/version.ts";

export type Command = (args: string[], output: CliOutput) => Promise<number>;

interface CommandEntry {
  run: Command;
  summary: string;
}

const COMMANDS: Record<string, CommandEntry> = {
  demo: { run: demoCommand, summary: "fine-tune the shipped tiny chat model to reverse words on CPU: accuracy before/after" },
  train: { run: trainCommand, summary: "fine-tune a model (flags of the peft examples/sft train.py workflow)" },
  dpo: { run: dpoCommand, summary: "preference training (TRL's DPOTrainer): prompt / chosen / rejected pairs, LoRA/QLoRA with the base as reference" },
  data: { run: dataCommand, summary: "prepare the dataset as `tuna train` would (same cache): statistics and marked examples" },
  eval: { run: evalCommand, summary: "loss and perplexity of a model (+ optional PEFT adapter) on a pre-tokenized dataset" },
  generate: { run: generateCommand, summary: "generate text from a prompt with a model (+ optional PEFT adapter), greedy or sampled" },
  chat: { run: chatCommand, summary: "chat with a model (+ optional PEFT adapter) through its chat template, on stdin" },
  merge: { run: mergeCommand, summary: "merge a PEFT LoRA adapter into its base model and save a Hugging Face model folder" },
  export: { run: exportCommand, summary: "write a model (+ optional PEFT adapter, merged) as a GGUF file for llama.cpp: f16, bf16, q8_0, q4_k_m" },
  serve: { run: serveCommand, summary: "serve a model and its adapters over HTTP with the OpenAI API (chat and completions, streaming)" },
  inspect: { run: inspectCommand, summary: "describe a model folder or hub id: architecture, parameters, memory, tokenizer" },
  doctor: { run: doctorCommand, summary: "check Node, CPU, GPU driver and CUDA libraries, and give a verdict" },
  plan: { run: planCommand, summary: "predict a training run's peak device memory per rank, part by part, and what fits a budget" },
  launch: { run: launchCommand, summary: "start N ranks of a command (tuna train ...) as torchrun does: data-parallel training" },
};

function usage(): string {
  const lines = ["usage: tuna <command> [options]", "", "commands:"];
  for (const [name, entry] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(10)} ${entry.summary}`);
  lines.push("", "`tuna <command> --help` describes a command's options. Add --debug to see stack traces.");
  return lines.join("\n");
}

export async function main(argv: string[], output: CliOutput = processOutput): Promise<number> {
  const debug = argv.includes("--debug");
  const args = argv.filter((a) => a !== "--debug");
  const [name, ...rest] = args;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    output.out(usage());
    return name === undefined ? 2 : 0;
  }
  if (name === "--version") {
    output.out(`tuna ${TUNA_VERSION}`);
    return 0;
  }
  const entry = COMMANDS[name];
  if (entry === undefined) {
    output.err(`tuna: unknown command '${name}'.\n\n${usage()}`);
    return 2;
  }
  try {
    return await entry.run(rest, output);
  } catch (e) {
    if (isTunaError(e)) {
      // Messages quote files and servers: no terminal control sequences, no passwords from URLs.
      output.err(`tuna ${name}: error [${e.code}]: ${safeText(e.message)}`);
      if (debug) output.err(String(e.stack));
      return e.code === "INTERNAL" ? 70 : 1;
    }
    // Not a TunaError: a bug in tuna (or a library failure we did not wrap). Always show the stack.
    const wrapped = new TunaError("INTERNAL", `unexpected failure: ${errorMessage(e)}`, { cause: e });
    output.err(`tuna ${name}: error [${wrapped.code}]: ${safeText(wrapped.message)}\n${e instanceof Error ? safeText(String(e.stack)) : ""}`);
    output.err("This is a bug in tuna; please report it with the command you ran.");
    return 70;
  }
}
