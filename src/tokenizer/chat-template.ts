// Rendering a chat template (Jinja, as in tokenizer_config.json) with @huggingface/jinja, with the
// variables transformers' apply_chat_template passes; template errors become TunaError CONFIG_INVALID.

import { Template } from "@huggingface/jinja";
import { TunaError, errorMessage } from "../util/errors.ts";
import { TemplateLimitError, renderBounded } from "./jinja-sandbox.ts";

export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: unknown; // tool_calls, name, ... passed through to the template
}

export interface ChatTemplateOptions {
  /** Append the prompt that opens an assistant turn. */
  addGenerationPrompt?: boolean;
  bosToken?: string;
  eosToken?: string;
  padToken?: string;
  unkToken?: string;
  /** Tool schemas, for templates that describe tools. */
  tools?: unknown[];
  /** Further template variables (e.g. enable_thinking, documents); they cannot override the ones above. */
  variables?: Record<string, unknown>;
}

// Parsed templates by source: one conversation renders several prefixes (assistant spans), and rendering
// does not change a parsed template (each render gets a fresh environment).
const compiledTemplates = new Map<string, Template>();
const COMPILED_TEMPLATES = 16;

function compile(template: string): Template {
  let compiled = compiledTemplates.get(template);
  if (compiled !== undefined) return compiled;
  try {
    compiled = new Template(template);
  } catch (e) {
    throw new TunaError("CONFIG_INVALID", `the chat template does not parse: ${errorMessage(e)}. Fix the template.`, {
      cause: e,
    });
  }
  if (compiledTemplates.size >= COMPILED_TEMPLATES) compiledTemplates.delete(compiledTemplates.keys().next().value!);
  compiledTemplates.set(template, compiled);
  return compiled;
}

/** Render `messages` through a Jinja chat template; CONFIG_INVALID names the parse or render problem. */
export function renderChatTemplate(template: string, messages: ChatMessage[], options: ChatTemplateOptions = {}): string {
  const compiled = compile(template);
  const variables: Record<string, unknown> = {
    ...options.variables,
    messages,
    add_generation_prompt: options.addGenerationPrompt ?? false,
  };
  if (options.bosToken !== undefined) variables.bos_token = options.bosToken;
  if (options.eosToken !== undefined) variables.eos_token = options.eosToken;
  if (options.padToken !== undefined) variables.pad_token = options.padToken;
  if (options.unkToken !== undefined) variables.unk_token = options.unkToken;
  if (options.tools !== undefined) variables.tools = options.tools;
  try {
    return renderBounded(compiled, variables);
  } catch (e) {
    if (e instanceof TemplateLimitError) {
      throw new TunaError(
        "CONFIG_INVALID",
        `the chat template was stopped while rendering ${messages.length} message(s): ${e.message}. A template from a ` +
          `model's tokenizer_config.json or --chat_template_file is untrusted input; use another template.`,
        { cause: e },
      );
    }
    // raise_exception(...) in a template lands here too: it states what the conversation got wrong.
    throw new TunaError(
      "CONFIG_INVALID",
      `the chat template failed while rendering ${messages.length} message(s): ${errorMessage(e)}. ` +
        `Check the roles and order of the messages, or fix the template.`,
      { cause: e },
    );
  }
}
