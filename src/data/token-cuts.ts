// Character positions of a text mapped to token positions for tokenizers that report no offsets (the
// @huggingface/tokenizers encode gives none): tokenize the stretch ending at each cut and check it.
//
// The text is tokenized once. HF tokenizers split added tokens off first and tokenize the text between
// them on its own, so a cut costs one tokenization of the stretch from the added token before it up to
// the cut (the whole prefix when added tokens cannot be lined up with the ids). The result must equal the
// full ids at that place; a cut where a token straddles the boundary (BPE merging across it) fails the
// check, and then the text is tokenized piece by piece between the cuts (the caller counts those).
// A tokenizer with a WordEncoder (fast-encode.ts) gives the same answers without re-tokenizing: the ids of
// a prefix ending at a word boundary are the words before it, and a cut inside a word re-encodes that word.

import { splitPattern } from "../tokenizer/added-tokens.ts";
import type { LoadedTokenizer } from "../tokenizer/load.ts";
import type { WordEncoder } from "../tokenizer/fast-encode.ts";

export interface CutTokens {
  /** Token ids of the text, without the post-processor's special tokens. */
  ids: number[];
  /** For each cut, how many tokens cover text[0, cut). */
  tokenCuts: number[];
  /** True when some cut split a token, so the ids are the pieces' ids concatenated. */
  segmented: boolean;
}

interface AddedTokenIndex {
  pattern: RegExp | undefined;
  idOf: ReadonlyMap<string, number>;
  ids: ReadonlySet<number>;
}

const indexes = new WeakMap<LoadedTokenizer, AddedTokenIndex>();

function addedTokenIndex(tokenizer: LoadedTokenizer): AddedTokenIndex {
  let index = indexes.get(tokenizer);
  if (index === undefined) {
    const idOf = new Map(tokenizer.addedTokens.map((t) => [t.content, t.id]));
    index = { pattern: splitPattern(idOf.keys()), idOf, ids: new Set(idOf.values()) };
    indexes.set(tokenizer, index);
  }
  return index;
}

/**
 * Stretches of the text that start at added tokens, each with its first token's index: the k-th added
 * token in the text is the k-th added-token id in `ids` when the two lists agree (they do unless some
 * occurrence was not split off, e.g. a normalized added token). When they do not, only the first
 * stretch (at 0) is known and every cut is found by tokenizing its prefix.
 */
function stretches(tokenizer: LoadedTokenizer, text: string, ids: readonly number[]): { starts: number[]; startTokens: number[] } {
  const index = addedTokenIndex(tokenizer);
  const matches = index.pattern === undefined ? [] : [...text.matchAll(index.pattern)];
  const positions: number[] = [];
  for (let i = 0; i < ids.length; i++) if (index.ids.has(ids[i]!)) positions.push(i);
  const aligned = positions.length === matches.length && matches.every((m, k) => ids[positions[k]!] === index.idOf.get(m[0]));
  if (!aligned) return { starts: [0], startTokens: [0] };
  const starts = [0, ...matches.map((m) => m.index)];
  const startTokens = [0, ...positions];
  return { starts, startTokens };
}

function matchesAt(ids: readonly number[], at: number, piece: readonly number[]): boolean {
  if (at + piece.length > ids.length) return false;
  for (let i = 0; i < piece.length; i++) if (ids[at + i] !== piece[i]) return false;
  return true;
}

/** Tokenize `text` and find the token index of each character cut (ascending, within [0, text.length]). */
export function encodeWithCuts(tokenizer: LoadedTokenizer, text: string, cuts: readonly number[]): CutTokens {
  const encode = (s: string): number[] => tokenizer.encode(s, { addSpecialTokens: false });
  if (tokenizer.wordEncoder !== undefined) return encodeWithWordCuts(tokenizer.wordEncoder, encode, text, cuts);
  const ids = encode(text);

  const { starts, startTokens } = stretches(tokenizer, text, ids);
  const tokenCuts: number[] = [];
  let stretch = 0;
  for (const cut of cuts) {
    while (stretch + 1 < starts.length && starts[stretch + 1]! <= cut) stretch++;
    const start = starts[stretch]!;
    const startToken = startTokens[stretch]!;
    let found: number | undefined;
    if (cut === 0) found = 0;
    else if (cut === text.length) found = ids.length;
    else if (start === cut) found = startToken;
    else {
      const piece = encode(text.slice(start, cut));
      if (matchesAt(ids, startToken, piece)) found = startToken + piece.length;
    }
    if (found === undefined && start > 0) {
      const prefix = encode(text.slice(0, cut));
      if (matchesAt(ids, 0, prefix)) found = prefix.length;
    }
    if (found === undefined) return encodePieces(encode, text, cuts);
    tokenCuts.push(found);
  }
  return { ids, tokenCuts, segmented: false };
}

/**
 * encodeWithCuts through word units: a cut's token index is the length of encode(text.slice(0, cut)) when
 * that is a prefix of the ids (what the checks above establish), read off the units instead of encoding.
 */
function encodeWithWordCuts(words: WordEncoder, encode: (s: string) => number[], text: string, cuts: readonly number[]): CutTokens {
  const units = words.encodeUnits(text);
  const { ids, ends, tokenEnds } = units;
  const startOf = (k: number): number => (k === 0 ? 0 : ends[k - 1]!);
  const tokenCuts: number[] = [];
  let k = 0;
  for (const cut of cuts) {
    // Skip the units that lie before the cut; a unit of no characters at the cut (a stretch's prepended
    // "▁" alone) is not part of text.slice(0, cut), whose stretch is empty there.
    while (k < ends.length && (ends[k]! < cut || (ends[k] === cut && startOf(k) < cut))) k++;
    const tokenStart = k === 0 ? 0 : tokenEnds[k - 1]!;
    if (k === ends.length || startOf(k) >= cut) {
      tokenCuts.push(tokenStart);
      continue;
    }
    const piece = words.encodeUnitPrefix(text, units, k, cut);
    if (piece === undefined || !matchesAt(ids, tokenStart, piece)) return encodePieces(encode, text, cuts);
    tokenCuts.push(tokenStart + piece.length);
  }
  return { ids, tokenCuts, segmented: false };
}

// The fallback: each piece between cuts tokenized alone, so the cuts are token boundaries by construction.
function encodePieces(encode: (s: string) => number[], text: string, cuts: readonly number[]): CutTokens {
  const ids: number[] = [];
  const tokenCuts: number[] = [];
  let at = 0;
  for (const cut of cuts) {
    if (cut > at) ids.push(...encode(text.slice(at, cut)));
    tokenCuts.push(ids.length);
    at = Math.max(at, cut);
  }
  if (at < text.length) ids.push(...encode(text.slice(at)));
  return { ids, tokenCuts, segmented: true };
}
