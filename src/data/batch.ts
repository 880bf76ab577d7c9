// A training/eval batch in tuna's one layout: N tokens flattened, documents delimited by cuSeqlens,
// per-token positions, and next-token targets already shifted (-100 = no loss), as the model consumes it.
import { TunaError } from "../util/errors.ts";

export const IGNORE_INDEX = -100;

export interface Batch {
  ids: Int32Array; // (N)
  positions: Int32Array; // (N)
  /** (S+1) document boundaries; attention never crosses them. */
  cuSeqlens: Int32Array;
  /** (N) target of each token's logits (the NEXT token's label), IGNORE_INDEX where no loss. */
  targets: Int32Array;
  /** Rows of the original (B, T) batch as [start, length] in the flat axis, for reshaping outputs. */
  rows: [number, number][];
}

export interface HfRow {
  inputIds: readonly number[];
  /** Same length as inputIds, HF convention (unshifted, -100 ignored); defaults to inputIds. */
  labels?: readonly number[];
  /** 1 = real token, 0 = padding; defaults to all ones. */
  attentionMask?: readonly number[];
}

/**
 * Rows as transformers sees a padded batch: positions 0..T-1 per row (transformers derives them from
 * the cache position, not the mask), masked tokens isolated into their own segments (they are never
 * attended by real tokens), and targets shifted inside the row (logits[t] predicts labels[t+1]).
 */
export function batchFromRows(rows: readonly HfRow[]): Batch {
  const ids: number[] = [];
  const positions: number[] = [];
  const targets: number[] = [];
  const cu: number[] = [0];
  const spans: [number, number][] = [];
  rows.forEach((row, r) => {
    const T = row.inputIds.length;
    const labels = row.labels ?? row.inputIds;
    const mask = row.attentionMask ?? new Array<number>(T).fill(1);
    if (labels.length !== T || mask.length !== T) {
      throw new TunaError("CONFIG_INVALID", `row ${r}: input_ids has ${T} tokens but labels has ${labels.length} and attention_mask ${mask.length}`);
    }
    spans.push([ids.length, T]);
    for (let t = 0; t < T; t++) {
      ids.push(row.inputIds[t]!);
      positions.push(t);
      targets.push(t + 1 < T ? labels[t + 1]! : IGNORE_INDEX);
      // A new segment starts where the mask value changes.
      if (t + 1 === T || mask[t + 1] !== mask[t]) cu.push(ids.length);
    }
  });
  return { ids: Int32Array.from(ids), positions: Int32Array.from(positions), cuSeqlens: Int32Array.from(cu), targets: Int32Array.from(targets), rows: spans };
}

/**
 * Several documents packed into one flat sequence (padding-free): positions restart at 0 and the
 * shift never crosses a document boundary (each document's last token has no target).
 */
export function batchFromDocuments(docs: readonly { inputIds: readonly number[]; labels?: readonly number[] }[]): Batch {
  const ids: number[] = [];
  const positions: number[] = [];
  const targets: number[] = [];
  const cu: number[] = [0];
  for (const doc of docs) {
    const labels = doc.labels ?? doc.inputIds;
    const T = doc.inputIds.length;
    for (let t = 0; t < T; t++) {
      ids.push(doc.inputIds[t]!);
      positions.push(t);
      targets.push(t + 1 < T ? labels[t + 1]! : IGNORE_INDEX);
    }
    cu.push(ids.length);
  }
  return { ids: Int32Array.from(ids), positions: Int32Array.from(positions), cuSeqlens: Int32Array.from(cu), targets: Int32Array.from(targets), rows: [[0, ids.length]] };
}

export function countTrainedTokens(batch: Batch): number {
  let n = 0;
  for (const t of batch.targets) if (t !== IGNORE_INDEX) n++;
  return n;
}
