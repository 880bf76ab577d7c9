// `tuna chat <model>`: an interactive conversation on stdin (a terminal or a pipe) rendered with the chat
// template, each reply streamed to stdout; /reset starts over, /exit or end of input quits.
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { TunaError } from "../../util/errors.ts";
import type { ChatMessage } from "../../tokenizer/chat-template.ts";
import type { CliOutput } from "../output.ts";
import { SHARED_HELP, SHARED_OPTIONS, openGenerationSession, parseFlags, runGeneration, sharedSettings, streamWriter } from "./generate.ts";
import { chatTemplateFor, encodeChat, replyText, resolveFor } from "../../train/generation-session.ts";

const HELP = `usage: tuna chat <model folder | hub id> [options]

Chats with the model (and an optional PEFT adapter): each line you type is a user message; the reply
streams as it is generated. The conversation is kept and rendered with the tokenizer's chat template
(only the new part of it is run through the model). Commands: /reset forgets the conversation,
/exit (or end of input, Ctrl-D) quits. Works with piped input too, one message per line.
${SHARED_HELP}`;

export async function chatCommand(args: string[], output: CliOutput): Promise<number> {
  return runChat(args, output, process.stdin);
}

/** The chat loop over any input stream (process.stdin for the CLI, a Readable in tests). */
export async function runChat(args: string[], output: CliOutput, input: Readable & { isTTY?: boolean }): Promise<number> {
  const { values, positionals } = parseFlags(args, SHARED_OPTIONS, HELP);
  if (values.help === true) {
    output.out(HELP);
    return 0;
  }
  const problems: string[] = [];
  if (positionals.length !== 1) problems.push("give exactly one model (folder or hub id)");
  const shared = sharedSettings(values, problems);
  if (problems.length > 0) throw new TunaError("CONFIG_INVALID", `${problems.join("; ")}.\n\n${HELP}`);

  const session = await openGenerationSession(positionals[0]!, values, shared.device, (m) => {
    output.err(m);
  });
  const template = chatTemplateFor(session, values.chat_template);
  const settings = resolveFor(session, shared.overrides);
  const start = (): ChatMessage[] => (values.system === undefined ? [] : [{ role: "system", content: values.system }]);
  let messages = start();
  // Each reply draws from its own seed (seed + turn), so a conversation replays identically.
  let turn = 0;

  const interactive = input.isTTY === true;
  const rl = createInterface({ input, ...(interactive ? { output: process.stdout, terminal: true } : { terminal: false }) });
  rl.on("SIGINT", () => {
    rl.close();
  });
  if (interactive) {
    output.err(`chatting with ${session.opened.dir}; /reset starts over, /exit quits.`);
    rl.setPrompt("> ");
    rl.prompt();
  }
  const writer = streamWriter(output);
  for await (const raw of rl) {
    const line = raw.trim();
    if (line === "/exit") break;
    if (line === "/reset") {
      messages = start();
      output.err("(conversation reset)");
    } else if (line !== "") {
      const candidate: ChatMessage[] = [...messages, { role: "user", content: line }];
      const prompt = encodeChat(session, template, candidate);
      const r = await runGeneration(session, prompt, settings, shared.seed + turn, (text) => {
        writer.write(text);
      });
      writer.end();
      if (r.contextLimited && r.finishReason === "length") {
        output.err(`(stopped at the model's context of ${session.opened.cfg.maxPositionEmbeddings} tokens; /reset starts a new conversation)`);
      }
      messages = [...candidate, { role: "assistant", content: replyText(session, r) }];
      turn++;
    }
    if (interactive) rl.prompt();
  }
  rl.close();
  return 0;
}
