// `tuna data --show` helpers: token-by-token decoding (leading spaces kept in context, the byte tokens of
// one character grouped), [[...]] and ANSI marking of trained runs, and which examples a split shows.
// Expected pieces are written by hand from the tiny-llama vocabulary (▁ = space, <0xNN> = byte tokens).
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { setupChatFormat } from "../../src/data/chat-format.ts";
import type { PreparedSplit } from "../../src/data/prepare.ts";
import { decodePieces, examplesToShow, renderMarked, type TokenPiece } from "../../src/data/show.ts";
import type { SplitStats } from "../../src/data/types.ts";
import { loadTokenizer, type LoadedTokenizer } from "../../src/tokenizer/load.ts";

const TINY = fileURLToPath(new URL("../../examples/tiny-llama", import.meta.url));
let chatml: LoadedTokenizer;

before(async () => {
  chatml = setupChatFormat(await loadTokenizer(TINY), "chatml", 32000).tokenizer;
});

function idsOf(tokenizer: LoadedTokenizer, pieces: string[]): Int32Array {
  return Int32Array.from(pieces, (p) => {
    const id = tokenizer.tokenToId(p);
    assert.ok(id !== undefined, `${p} is in the vocabulary`);
    return id;
  });
}

const piece = (text: string, trained: boolean, tokens = 1): TokenPiece => ({ text, tokens, trained });

test("decodePieces: each token's text as it reads in context, the space of ▁there kept", () => {
  const ids = idsOf(chatml, ["<|im_start|>assistant", "▁", "<0x0A>", "Hello", "▁there", "<|im_end|>"]);
  const trained = Uint8Array.from([0, 0, 0, 1, 1, 1]);
  // The decoder strips the "▁" that starts the text after an added token (the template wrote "\n" there).
  assert.deepEqual(decodePieces(chatml, ids, trained), [
    piece("<|im_start|>assistant", false),
    piece("", false),
    piece("\n", false),
    piece("Hello", true),
    piece(" there", true),
    piece("<|im_end|>", true),
  ]);
});

test("decodePieces: the byte tokens of one character form one piece; the first token keeps no leading space", () => {
  // "x𝔘y": ▁x, then U+1D518 as the four bytes F0 9D 94 98, then y.
  const ids = idsOf(chatml, ["▁x", "<0xF0>", "<0x9D>", "<0x94>", "<0x98>", "y"]);
  const pieces = decodePieces(chatml, ids, Uint8Array.from([0, 1, 1, 1, 1, 0]));
  assert.deepEqual(pieces, [piece("x", false), piece("𝔘", true, 4), piece("y", false)]);
  assert.equal(pieces.map((p) => p.text).join(""), chatml.decode(Array.from(ids)));
  // A character cut off at the end of an example still comes out, as the decoder renders its bytes.
  const cut = decodePieces(chatml, ids.subarray(0, 3), Uint8Array.from([0, 1, 1]));
  assert.equal(cut.length, 2);
  assert.equal(cut[1]!.tokens, 2);
});

test("renderMarked: brackets around each run of trained pieces, ANSI colours reset between runs", () => {
  const pieces = [piece("a", false), piece(" b", true), piece("c", true), piece(" d", false), piece("e", true)];
  assert.equal(renderMarked(pieces, "brackets"), "a[[ bc]] d[[e]]");
  assert.equal(
    renderMarked(pieces, "ansi"),
    "\x1b[2ma\x1b[0m\x1b[32m bc\x1b[0m\x1b[2m d\x1b[0m\x1b[32me\x1b[0m",
  );
  assert.equal(renderMarked([piece("x", true)], "brackets"), "[[x]]");
  assert.equal(renderMarked([], "brackets"), "");
  assert.equal(renderMarked([], "ansi"), "");
});

const STATS: SplitStats = { split: "train", rows: 3, dropped: 0, truncated: 0, tokens: 6, trainedTokens: 3, sequences: 2, packingEfficiency: 0.75 };

// Two BFD bins: bin 0 holds rows 2 then 0, bin 1 holds row 1 (longest first, as best-fit-decreasing places them).
function packedSplit(): PreparedSplit {
  return {
    split: "train",
    stats: STATS,
    fromCache: true,
    sequences: [
      { inputIds: Int32Array.from([20, 21, 22, 0]), trained: Uint8Array.from([0, 1, 1, 0]), docLengths: [3, 1], rows: [2, 0] },
      { inputIds: Int32Array.from([10, 11]), trained: Uint8Array.from([0, 1]), docLengths: [2], rows: [1] },
    ],
  };
}

test("examplesToShow from the cache: packed documents cut apart and ordered by row", () => {
  const shown = examplesToShow(packedSplit(), 2, { wrapped: false });
  assert.deepEqual(
    shown.map((e) => [e.rows, Array.from(e.inputIds), Array.from(e.trained)]),
    [
      [[0], [0], [0]],
      [[1], [10, 11], [0, 1]],
    ],
  );
  assert.equal(examplesToShow(packedSplit(), 10, { wrapped: false }).length, 3);
});

test("examplesToShow: fresh examples when the split has them; whole sequences when wrapped", () => {
  const fresh: PreparedSplit = {
    ...packedSplit(),
    fromCache: false,
    examples: [
      { inputIds: Int32Array.from([5]), trained: Uint8Array.from([1]), row: 0, truncatedTokens: 0 },
      { inputIds: Int32Array.from([6, 7]), trained: Uint8Array.from([0, 1]), row: 2, truncatedTokens: 0 },
    ],
  };
  assert.deepEqual(examplesToShow(fresh, 5, { wrapped: false }).map((e) => [e.rows, Array.from(e.inputIds)]), [[[0], [5]], [[2], [6, 7]]]);
  const wrapped: PreparedSplit = {
    ...fresh,
    sequences: [{ inputIds: Int32Array.from([1, 2, 3, 4]), trained: Uint8Array.from([1, 1, 1, 1]), docLengths: [4], rows: [0, 1, 1] }],
  };
  assert.deepEqual(examplesToShow(wrapped, 5, { wrapped: true }).map((e) => [e.rows, Array.from(e.inputIds)]), [[[0, 1], [1, 2, 3, 4]]]);
});
