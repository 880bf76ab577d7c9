// What `tuna data --show` displays: the first examples of a prepared split, decoded token by token
// through the tokenizer, with the trained tokens marked (ANSI colour on a terminal, [[...]] otherwise).
import type { LoadedTokenizer } from "../tokenizer/load.ts";
import type { PreparedSplit } from "./prepare.ts";

/** One example to display: its tokens and loss mask, and the source rows it holds. */
export interface ShownExample {
  /** One row for an example or a packed document; a wrapped sequence lists every row it holds (some partly). */
  rows: number[];
  inputIds: Int32Array;
  trained: Uint8Array;
}

/**
 * The first `count` examples of a split, by source row. Freshly prepared splits carry their tokenized
 * examples; a split read from the cache has only its packed sequences, whose documents carry the same
 * ids and flags (BFD keeps examples whole). A wrapped sequence is one document made of several rows with
 * no boundaries between them, so `wrapped` shows the first sequences instead.
 */
export function examplesToShow(split: PreparedSplit, count: number, options: { wrapped: boolean }): ShownExample[] {
  if (split.examples !== undefined && !options.wrapped) {
    return split.examples.slice(0, count).map((e) => ({ rows: [e.row], inputIds: e.inputIds, trained: e.trained }));
  }
  if (options.wrapped) {
    return split.sequences.slice(0, count).map((s) => ({ rows: [...new Set(s.rows)], inputIds: s.inputIds, trained: s.trained }));
  }
  const documents: ShownExample[] = [];
  for (const s of split.sequences) {
    let offset = 0;
    s.docLengths.forEach((length, i) => {
      documents.push({ rows: [s.rows[i] ?? -1], inputIds: s.inputIds.subarray(offset, offset + length), trained: s.trained.subarray(offset, offset + length) });
      offset += length;
    });
  }
  documents.sort((a, b) => a.rows[0]! - b.rows[0]!);
  return documents.slice(0, count);
}

/** Decoded text of one token, or of a few tokens that only decode together (the bytes of one character). */
export interface TokenPiece {
  text: string;
  /** Tokens in the piece (more than one only for byte-fallback / byte-level pieces of one character). */
  tokens: number;
  trained: boolean;
}

// Tokens decoded before the current one, so that decoders which depend on neighbours (a leading space
// stripped at the start, "##" continuations, byte sequences) render the token as it reads in context.
const CONTEXT_TOKENS = 8;
// A UTF-8 character is at most 4 bytes, so at most 4 byte tokens.
const MAX_PIECE_TOKENS = 4;
const REPLACEMENT = "\uFFFD";

/**
 * The text each token contributes to the decoded example: decode(context + token) minus decode(context),
 * so the pieces concatenate to what the tokenizer decodes for the whole example. Tokens whose bytes only
 * form a character together (byte fallback, byte-level BPE) are one piece.
 */
export function decodePieces(tokenizer: LoadedTokenizer, inputIds: Int32Array, trained: Uint8Array): TokenPiece[] {
  const ids = Array.from(inputIds);
  const pieces: TokenPiece[] = [];
  let start = 0;
  for (let end = 1; end <= ids.length; end++) {
    const from = Math.max(0, start - CONTEXT_TOKENS);
    const before = tokenizer.decode(ids.slice(from, start));
    const after = tokenizer.decode(ids.slice(from, end));
    const complete = after.startsWith(before) && !after.endsWith(REPLACEMENT);
    if (!complete && end - start < MAX_PIECE_TOKENS && end < ids.length) continue;
    const text = after.startsWith(before) ? after.slice(before.length) : tokenizer.decode(ids.slice(start, end));
    let anyTrained = false;
    for (let i = start; i < end; i++) anyTrained ||= trained[i] === 1;
    pieces.push({ text, tokens: end - start, trained: anyTrained });
    start = end;
  }
  return pieces;
}

export type MarkStyle = "ansi" | "brackets";

const ANSI = { trained: "\x1b[32m", untrained: "\x1b[2m", reset: "\x1b[0m" };

/** The pieces as one text, each run of trained pieces marked: [[...]], or green (trained) and dim (not trained). */
export function renderMarked(pieces: readonly TokenPiece[], style: MarkStyle): string {
  let out = "";
  let run: boolean | undefined;
  for (const piece of pieces) {
    if (piece.trained !== run) {
      if (style === "brackets") out += `${run === true ? "]]" : ""}${piece.trained ? "[[" : ""}`;
      // Reset between runs: dim and green would otherwise combine.
      else out += `${run === undefined ? "" : ANSI.reset}${piece.trained ? ANSI.trained : ANSI.untrained}`;
      run = piece.trained;
    }
    out += piece.text;
  }
  if (style === "brackets" && run === true) out += "]]";
  if (style === "ansi" && run !== undefined) out += ANSI.reset;
  return out;
}
