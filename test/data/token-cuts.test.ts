// encodeWithCuts: character cuts to token indices on examples/tiny-llama, through added-token stretches
// and through whole prefixes, and the piecewise fallback when a cut falls inside a token.

import { before, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { encodeWithCuts } from "../../src/data/token-cuts.ts";
import { loadTokenizer } from "../../src/tokenizer/load.ts";
import type { LoadedTokenizer } from "../../src/tokenizer/load.ts";

const TINY = fileURLToPath(new URL("../../examples/tiny-llama", import.meta.url));
let tok: LoadedTokenizer;

before(async () => {
  tok = await loadTokenizer(TINY);
});

const ids = (...pieces: string[]): number[] => pieces.map((p) => tok.tokenToId(p)!);

test("cuts at word starts and at added tokens map to token counts", () => {
  const text = "Hello there</s>General Kenobi</s>";
  // ▁Hello ▁there </s> ▁General ▁Ken obi </s>: the text after </s> is a piece of its own, hence "▁General".
  const expected = [...ids("▁Hello", "▁there"), 2, ...ids("▁General", "▁Ken", "obi"), 2];
  assert.equal(expected.length, 7);
  const cuts = [0, 5, 11, 15, 22, text.length];
  const out = encodeWithCuts(tok, text, cuts);
  assert.deepEqual(out.ids, expected);
  assert.deepEqual(out.tokenCuts, [0, 1, 2, 3, 4, 7]);
  assert.equal(out.segmented, false);
});

test("a cut inside a token tokenizes the pieces apart", () => {
  const out = encodeWithCuts(tok, "Paris is nice", [3]);
  assert.equal(out.segmented, true);
  assert.deepEqual(out.ids, [...ids("▁Par"), ...ids("▁is", "▁is", "▁nice")]);
  assert.deepEqual(out.tokenCuts, [1]);
});
