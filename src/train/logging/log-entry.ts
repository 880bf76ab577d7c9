// One logged event of a training run (HF's log_history entry): the step plus named values such as
// loss, learning_rate, grad_norm, epoch, tokens_per_second, or eval_loss and eval_perplexity.

export type LogValue = number | string | boolean | null;

/** Train entries carry `loss`, `learning_rate`, `grad_norm`, `epoch`...; eval entries `eval_*` keys. */
export interface LogEntry {
  step: number;
  [key: string]: LogValue | undefined;
}

/** The value of `key` when it is a number (NaN included), else undefined. */
export function numberOf(entry: LogEntry, key: string): number | undefined {
  const value = entry[key];
  return typeof value === "number" ? value : undefined;
}
