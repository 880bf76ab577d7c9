// encodeWithCuts: character cuts to token indices on examples/tiny-llama, through added-token stretches
// and through whole prefixes, the piecewise fallback when a cut falls inside a token, and the word-unit
// path (fast-encode.ts) against re-tokenizing prefixes.

import { before, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { setupChatFormat } from "../../src/data/chat-format.ts";
import { encodeWithCuts } from "../../src/data/token-cuts.ts";
import { loadTokenizer } from "../../src/tokenizer/load.ts";
import type { LoadedTokenizer } from "../../src/tokenizer/load.ts";
import { createRng } from "../../src/util/random.ts";
import { libraryTokenizer, randomTexts, tokenizerFiles } from "../tokenizer/fixtures/reference-text.ts";

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

// The word-unit path against the path that re-tokenizes prefixes, on a tokenizer whose encode is the
// library's own whole-text encode (no word encoder): same ids, same cuts, same fallbacks.
void test("word units give the same cuts as re-tokenizing prefixes, cuts anywhere, with and without chatml tokens", () => {
  const { json, config } = tokenizerFiles(TINY);
  const lib = libraryTokenizer(json, config);
  const libraryBase: LoadedTokenizer = {
    ...tok,
    wordEncoder: undefined,
    encode: (text, options = {}) => ((options.addSpecialTokens ?? true) ? tok.encode(text, options) : lib.encode(text, { add_special_tokens: false }).ids),
  };
  const pairs: [string, LoadedTokenizer, LoadedTokenizer][] = [
    ["tiny-llama", tok, libraryBase],
    ["tiny-llama + chatml", setupChatFormat(tok, "chatml", 32000).tokenizer, setupChatFormat(libraryBase, "chatml", 32000).tokenizer],
  ];
  const rng = createRng(5);
  const texts = [
    "Hello there</s>General Kenobi</s>",
    "<|im_start|>user\nHi  there<|im_end|>\n<|im_start|>assistant\nHello 42 🤗<|im_end|>\n",
    " lead\n\n1. one</s>\n2. two",
    ...randomTexts(3, 300),
  ];
  let segmented = 0;
  let inside = 0;
  for (const [name, fast, slow] of pairs) {
    assert.ok(fast.wordEncoder !== undefined && slow.wordEncoder === undefined);
    for (const text of texts) {
      // Random cuts, and cuts next to every space, newline and "<": word edges, inside words, inside added tokens.
      const cuts = new Set<number>();
      for (let i = 0; i < 4; i++) cuts.add(Math.floor(rng.uniform() * (text.length + 1)));
      for (let i = 0; i < text.length; i++) if (" \n<".includes(text[i]!) && rng.uniform() < 0.3) cuts.add(i + Math.floor(rng.uniform() * 3) - 1);
      const sorted = [...cuts].filter((c) => c >= 0 && c <= text.length).sort((a, b) => a - b);
      const expected = encodeWithCuts(slow, text, sorted);
      assert.deepEqual(encodeWithCuts(fast, text, sorted), expected, `${name}: ${JSON.stringify(text)} cut at ${sorted.join(",")}`);
      if (expected.segmented) segmented++;
      const units = fast.wordEncoder.encodeUnits(text);
      if (!expected.segmented && sorted.some((c) => c > 0 && !units.ends.includes(c))) inside++;
    }
  }
  // Every single cut position on texts with stretches that start with a newline, a digit or spaces.
  for (const text of ["a</s>\n1 b", "</s>  x\n\n</s>7", "Hi  there\n42</s>ok 🤗x"]) {
    for (let cut = 0; cut <= text.length; cut++) {
      assert.deepEqual(encodeWithCuts(tok, text, [cut]), encodeWithCuts(libraryBase, text, [cut]), `${JSON.stringify(text)} cut at ${cut}`);
    }
  }
  // Both outcomes occur: cuts that split a token, and cuts inside a word that still fall between its tokens.
  assert.ok(segmented > 20 && inside > 20, `segmented ${segmented}, cut inside a word ${inside}`);
});
