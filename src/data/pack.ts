// Turns tokenized examples into training sequences: TRL's best-fit-decreasing packing (segment tree over
// remaining space), wrapped packing (concatenate and cut), or one sequence per example.
import { TunaError } from "../util/errors.ts";
import type { PackedSequence, TokenizedExample } from "./types.ts";

export type PackOverflow = "truncate" | "split";

export interface BfdOptions {
  /**
   * Rows packed together, like TRL's `dataset.map(batched=True)` batches of 1000: bins never mix rows of
   * different chunks. Default: the whole dataset, which gives fuller bins; pass 1000 to match TRL's rows.
   */
  chunkSize?: number;
  /** `truncate` (TRL `bfd`) keeps the first maxLength tokens; `split` (TRL `bfd_split`) cuts fragments. */
  overflow: PackOverflow;
}

export interface WrappedOptions {
  /** Drop the last chunk shorter than maxLength (legacy ConstantLengthDataset) or keep it (TRL `wrapped`). */
  dropRemainder: boolean;
  /** Rows concatenated together (TRL: 1000-row map batches). Default: the whole dataset. */
  chunkSize?: number;
}

/** One item to place in a bin: a token range of one example. */
interface PackItem {
  example: TokenizedExample;
  start: number;
  length: number;
}

function checkLength(maxLength: number, what: string): void {
  if (!Number.isInteger(maxLength) || maxLength < 1) {
    throw new TunaError("CONFIG_INVALID", `${what}: max_length must be a positive integer, got ${maxLength}`);
  }
}

function chunksOf<T>(items: readonly T[], chunkSize: number | undefined, what: string): (readonly T[])[] {
  if (chunkSize === undefined) return [items];
  if (!Number.isInteger(chunkSize) || chunkSize < 1) {
    throw new TunaError("CONFIG_INVALID", `${what}: chunkSize must be a positive integer, got ${chunkSize}`);
  }
  const out: (readonly T[])[] = [];
  for (let i = 0; i < items.length; i += chunkSize) out.push(items.slice(i, i + chunkSize));
  return out;
}

/**
 * Max segment tree over space values 1..capacity: leaf v holds v when some bin has exactly v tokens free
 * (or v == capacity, the ever-present "new bin"), else 0. `search(n)` returns the smallest present
 * value >= n, i.e. the best fit. Same shape as TRL's `_SegmentTree`.
 */
interface SpaceTree {
  add(space: number): void;
  remove(space: number): void;
  search(length: number): number;
}

function createSpaceTree(capacity: number): SpaceTree {
  let leaves = 1;
  while (leaves < capacity) leaves *= 2;
  const tree = new Int32Array(2 * leaves);
  const update = (space: number, value: number): void => {
    let i = leaves + space - 1;
    tree[i] = value;
    while (i > 1) {
      i >>= 1;
      const left = tree[2 * i]!;
      const right = tree[2 * i + 1]!;
      tree[i] = left >= right ? left : right;
    }
  };
  return {
    add: (space) => {
      update(space, space);
    },
    remove: (space) => {
      update(space, 0);
    },
    search: (length) => {
      let i = 1;
      while (i < leaves) i = tree[2 * i]! >= length ? 2 * i : 2 * i + 1;
      return tree[i]!;
    },
  };
}

/** Best-fit-decreasing over one chunk: bins as lists of items, in creation order. */
function bestFitDecreasing(items: PackItem[], capacity: number): PackItem[][] {
  // Array.prototype.sort is stable: equal lengths keep their input order (pyarrow's sort is stable too).
  const order = items.map((_, i) => i).sort((a, b) => items[b]!.length - items[a]!.length);
  const tree = createSpaceTree(capacity);
  tree.add(capacity);
  // FIFO of bins per remaining space: the oldest bin with the best-fitting space is filled first.
  const queues = new Map<number, { bins: number[]; head: number }>();
  const bins: PackItem[][] = [];
  for (const i of order) {
    const item = items[i]!;
    const space = tree.search(item.length);
    let bin: number;
    if (space < capacity) {
      const queue = queues.get(space)!;
      bin = queue.bins[queue.head++]!;
      if (queue.head === queue.bins.length) {
        queues.delete(space);
        tree.remove(space);
      }
    } else {
      bin = bins.length;
      bins.push([]);
    }
    bins[bin]!.push(item);
    const left = space - item.length;
    if (left > 0) {
      let queue = queues.get(left);
      if (queue === undefined) {
        queue = { bins: [], head: 0 };
        queues.set(left, queue);
        tree.add(left);
      }
      queue.bins.push(bin);
    }
  }
  return bins;
}

// Sequences are views into shared slabs: allocating one typed array per sequence costs V8 a backing store
// each (measured here: 100k arrays of 750 ints took 11 s, one slab plus 100k views 1.5 s).
const SLAB_TOKENS = 1 << 24;

/** Hands out token ranges from slabs of at most SLAB_TOKENS tokens (or one sequence, if longer), sized to what is left. */
function createSlabs(totalTokens: number): (length: number) => { inputIds: Int32Array; trained: Uint8Array } {
  let left = totalTokens;
  let ids = new Int32Array(0);
  let trained = new Uint8Array(0);
  let used = 0;
  return (length) => {
    if (used + length > ids.length) {
      const size = Math.max(length, Math.min(SLAB_TOKENS, left));
      ids = new Int32Array(size);
      trained = new Uint8Array(size);
      used = 0;
    }
    const range = { inputIds: ids.subarray(used, used + length), trained: trained.subarray(used, used + length) };
    used += length;
    left -= length;
    return range;
  };
}

function sequenceFromItems(items: readonly PackItem[], singleDocument: boolean, alloc: ReturnType<typeof createSlabs>): PackedSequence {
  let total = 0;
  for (const item of items) total += item.length;
  const { inputIds, trained } = alloc(total);
  const docLengths: number[] = [];
  const rows: number[] = [];
  let offset = 0;
  for (const { example, start, length } of items) {
    inputIds.set(example.inputIds.subarray(start, start + length), offset);
    trained.set(example.trained.subarray(start, start + length), offset);
    offset += length;
    if (!singleDocument) docLengths.push(length);
    rows.push(example.row);
  }
  if (singleDocument) docLengths.push(total);
  return { inputIds, trained, docLengths, rows };
}

function checkExample(example: TokenizedExample, what: string): void {
  if (example.trained.length !== example.inputIds.length) {
    throw new TunaError(
      "INTERNAL",
      `${what}: row ${example.row} has ${example.inputIds.length} tokens but ${example.trained.length} trained flags; the tokenizer stage must emit one flag per token`,
    );
  }
}

/**
 * TRL's `_pack_bfd`: drop empty examples, truncate or split the long ones, sort by length (descending,
 * stable), put each into the bin with the least room that still fits (the oldest such bin), or open a
 * new bin. Bins come out in creation order, each document delimited in `docLengths`. O(n log n).
 */
export function packBfd(examples: readonly TokenizedExample[], maxLength: number, options: BfdOptions): PackedSequence[] {
  checkLength(maxLength, "BFD packing");
  const out: PackedSequence[] = [];
  for (const chunk of chunksOf(examples, options.chunkSize, "BFD packing")) {
    const items: PackItem[] = [];
    for (const example of chunk) {
      checkExample(example, "BFD packing");
      const n = example.inputIds.length;
      if (n === 0) continue;
      if (options.overflow === "truncate") {
        items.push({ example, start: 0, length: Math.min(n, maxLength) });
      } else {
        for (let start = 0; start < n; start += maxLength) items.push({ example, start, length: Math.min(maxLength, n - start) });
      }
    }
    const alloc = createSlabs(items.reduce((sum, item) => sum + item.length, 0));
    for (const bin of bestFitDecreasing(items, maxLength)) out.push(sequenceFromItems(bin, false, alloc));
  }
  return out;
}

/**
 * Concatenates the examples of each chunk and cuts every maxLength tokens. Each sequence is ONE document:
 * examples attend to each other, as in the legacy ConstantLengthDataset (whose concat token the tokenizer
 * stage inserts). TRL keeps the shorter last chunk; the legacy dataset dropped it.
 */
export function packWrapped(examples: readonly TokenizedExample[], maxLength: number, options: WrappedOptions): PackedSequence[] {
  checkLength(maxLength, "wrapped packing");
  const out: PackedSequence[] = [];
  for (const chunk of chunksOf(examples, options.chunkSize, "wrapped packing")) {
    let chunkTokens = 0;
    for (const example of chunk) chunkTokens += example.inputIds.length;
    const alloc = createSlabs(options.dropRemainder ? chunkTokens - (chunkTokens % maxLength) : chunkTokens);
    let pending: PackItem[] = [];
    let filled = 0;
    for (const example of chunk) {
      checkExample(example, "wrapped packing");
      const n = example.inputIds.length;
      for (let start = 0; start < n; ) {
        const length = Math.min(n - start, maxLength - filled);
        pending.push({ example, start, length });
        filled += length;
        start += length;
        if (filled === maxLength) {
          out.push(sequenceFromItems(pending, true, alloc));
          pending = [];
          filled = 0;
        }
      }
    }
    if (filled > 0 && !options.dropRemainder) out.push(sequenceFromItems(pending, true, alloc));
  }
  return out;
}

/** One sequence per example (no truncation here: the tokenizer stage truncates when not packing). Empty examples are dropped. */
export function noPacking(examples: readonly TokenizedExample[]): PackedSequence[] {
  const out: PackedSequence[] = [];
  for (const example of examples) {
    checkExample(example, "sequence building");
    if (example.inputIds.length === 0) continue;
    out.push({ inputIds: example.inputIds, trained: example.trained, docLengths: [example.inputIds.length], rows: [example.row] });
  }
  return out;
}
