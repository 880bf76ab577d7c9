// What the planner plans for: the model's config (a local folder, or a preset shape) with the vocabulary the
// chat format will resize it to, as `tuna train` would see it. Only config.json and the tokenizer are read.
import { resolve } from "node:path";
import type { TrainConfig } from "../../config/index.ts";
import { setupChatFormat } from "../../data/chat-format.ts";
import { parseModelConfig } from "../../hf/config.ts";
import { readModelConfig } from "../../hf/folder.ts";
import { MODEL_PRESETS, PRESET_NAMES } from "../../hf/presets.ts";
import { loadTokenizer } from "../../tokenizer/load.ts";
import { TunaError } from "../../util/errors.ts";
import { isDir } from "../../util/fs-checks.ts";
import type { PlanTarget } from "./from-config.ts";

/** The plan target of a configuration; `notes` says what the plan could not know. */
export async function planTargetFor(c: TrainConfig, device: "cpu" | "cuda", runtimeBytes: number): Promise<{ target: PlanTarget; source: string; notes: string[] }> {
  const name = c.model_name_or_path;
  const notes: string[] = [];
  if (await isDir(resolve(name))) {
    const dir = resolve(name);
    const base = await readModelConfig(dir);
    const chat = setupChatFormat(await loadTokenizer(dir), c.chat_template_format, base.vocabSize, c.chat_template_file);
    return { target: { cfg: { ...base, vocabSize: chat.resizedVocabSize }, newTokenIds: chat.newTokenIds, device, runtimeBytes }, source: dir, notes };
  }
  const preset = MODEL_PRESETS[name];
  if (preset !== undefined) {
    if (c.chat_template_format !== "none") notes.push(`a preset has no tokenizer: tokens the ${c.chat_template_format} format would add (and their trainable rows) are not counted.`);
    return { target: { cfg: parseModelConfig(preset, `preset ${name}`), newTokenIds: [], device, runtimeBytes }, source: `preset ${name}`, notes };
  }
  throw new TunaError(
    "CONFIG_INVALID",
    `tuna plan reads a local model folder or a preset shape; "${name}" is neither. Presets: ${PRESET_NAMES.join(", ")}. ` +
      "For a hub model, download it first (tuna train or huggingface-cli) and pass the folder.",
  );
}
