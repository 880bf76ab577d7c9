// What a run pushes to the hub and when (push_to_hub, hub_strategy), as the Trainer does: the model files of
// each checkpoint at the repo root while training (every_save; checkpoint also the latest checkpoint folder as
// last-checkpoint/, all_checkpoints each checkpoint in its own folder), and the output folder at the end
// (checkpoint folders, hidden files and _* left out, as the Trainer's ignore patterns do). A push during
// training that fails is reported and training goes on; the final push failing fails the command, with
// everything already saved locally.
import { readdir, stat } from "node:fs/promises";
import { join, relative } from "node:path";
import type { TrainConfig } from "../config/index.ts";
import { pushFiles } from "../hub/upload.ts";
import { errorMessage } from "../util/errors.ts";

/** Files under dir (relative, '/' separated) a push takes: not checkpoint-*, hidden or _* entries. */
export async function filesToPush(dir: string, options: { checkpoints: boolean } = { checkpoints: false }): Promise<string[]> {
  const out: string[] = [];
  const walk = async (at: string): Promise<void> => {
    for (const name of (await readdir(at)).sort()) {
      if (name.startsWith(".") || name.startsWith("_")) continue;
      if (!options.checkpoints && at === dir && /^checkpoint-\d+$/.test(name)) continue;
      const path = join(at, name);
      if ((await stat(path)).isDirectory()) await walk(path);
      else out.push(relative(dir, path).split("\\").join("/"));
    }
  };
  await walk(dir);
  return out;
}

/** The model's own files in a checkpoint (what save_model writes): the rest is optimizer and trainer state. */
const MODEL_FILE = /^(adapter_config\.json|adapter_model\.safetensors|config\.json|generation_config\.json|model.*\.safetensors(\.index\.json)?|tokenizer.*|special_tokens_map\.json|chat_template\.jinja|README\.md)$/;

export interface HubPusher {
  /** After checkpoint-N was saved (in outputDir). */
  checkpoint(step: number): Promise<void>;
  /** After the final save: the output folder. */
  end(): Promise<void>;
}

export function hubPusher(c: TrainConfig, outputDir: string, say: (m: string) => void): HubPusher | undefined {
  if (!c.push_to_hub || c.hub_model_id === undefined) return undefined;
  const repoId = c.hub_model_id;
  const base = { repoId, private: c.hub_private_repo };
  return {
    async checkpoint(step) {
      if (c.hub_strategy === "end") return;
      const dir = join(outputDir, `checkpoint-${step}`);
      try {
        const all = await filesToPush(dir);
        const model = all.filter((f) => MODEL_FILE.test(f));
        const url = await pushFiles({ ...base, folder: dir, files: model, title: `Training in progress, step ${step}` });
        if (c.hub_strategy === "checkpoint") await pushFiles({ ...base, folder: dir, files: all, prefix: "last-checkpoint/", title: `Training in progress, step ${step} (last-checkpoint)` });
        if (c.hub_strategy === "all_checkpoints") await pushFiles({ ...base, folder: dir, files: all, prefix: `checkpoint-${step}/`, title: `checkpoint-${step}` });
        say(`pushed step ${step} to ${repoId}${url === undefined ? "" : ` (${url})`}`);
      } catch (e) {
        say(`warning: pushing step ${step} to ${repoId} failed, training goes on (the final push will try again): ${errorMessage(e)}`);
      }
    },
    async end() {
      const url = await pushFiles({ ...base, folder: outputDir, files: await filesToPush(outputDir), title: "End of training" });
      say(`pushed ${outputDir} to ${repoId}${url === undefined ? "" : ` (${url})`}`);
    },
  };
}
