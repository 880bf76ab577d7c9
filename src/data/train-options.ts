// The prepareDatasets options that the train configuration implies, in one place, so that `tuna data`
// prepares (and caches, under the same fingerprints) exactly what `tuna train` with the same flags reads.
import { join, resolve } from "node:path";
import type { TrainConfig } from "../config/index.ts";
import type { PrepareOptions } from "./prepare.ts";
import type { SpecialTokenOverrides } from "./chat-format.ts";

/**
 * The model side of the data stage: the folder of the tokenizer files (the model's, or an adapter's), and the
 * model config's vocab_size and model_type (which decides transformers 5's tokenizer class).
 */
export interface DataModel {
  dir: string;
  vocabSize: number;
  modelType: string;
}

/** TRL's eos_token / pad_token of the configuration, as setupChatFormat takes them. */
export function specialTokenOverrides(c: TrainConfig): SpecialTokenOverrides {
  return { eosToken: c.eos_token, padToken: c.pad_token };
}

/** The cache folder of a run: `<output_dir>/.tuna-cache`, output_dir resolved against the working directory. */
export function preparedCacheDir(c: TrainConfig): string {
  return join(resolve(c.output_dir), ".tuna-cache");
}

/** Everything of PrepareOptions that the configuration decides (src/train/recipe.ts builds the same). */
export function trainPrepareOptions(c: TrainConfig, model: DataModel): Omit<PrepareOptions, "onNotice" | "useCache" | "threads"> {
  return {
    data: {
      datasetName: c.dataset_name,
      splits: c.splits,
      datasetTextField: c.dataset_text_field,
      maxLength: c.max_seq_length,
      packing: c.packing,
      packingStrategy: c.packing_strategy,
      dropLongExamples: c.drop_long_examples,
      skipBadRows: c.skip_bad_rows,
      testSplitRatio: c.test_split_ratio,
      seed: c.seed,
    },
    recipe: {
      tokenizerDir: model.dir,
      modelType: model.modelType,
      ...(c.eos_token === undefined ? {} : { eosToken: c.eos_token }),
      ...(c.pad_token === undefined ? {} : { padToken: c.pad_token }),
      chatFormat: c.chat_template_format,
      modelVocabSize: model.vocabSize,
      ...(c.chat_template_file === undefined ? {} : { templatePath: resolve(c.chat_template_file) }),
      options: {
        maxLength: c.max_seq_length,
        addSpecialTokens: c.add_special_tokens,
        appendConcatToken: c.append_concat_token,
        assistantOnlyLoss: c.assistant_only_loss,
        completionOnlyLoss: c.completion_only_loss,
        truncation: c.truncation_mode,
      },
    },
    tokenizerFiles: [join(model.dir, "tokenizer.json"), join(model.dir, "tokenizer_config.json"), ...(c.chat_template_file === undefined ? [] : [resolve(c.chat_template_file)])],
    cacheDir: preparedCacheDir(c),
  };
}
