// Special tokens added on top of a loaded tokenizer (what transformers' from_pretrained(pad_token=...,
// additional_special_tokens=[...]) does), wrapping the LoadedTokenizer: ids, splitting, encode and decode.
//
// @huggingface/tokenizers 0.2.0 has no add_tokens: added tokens are fixed when a Tokenizer is built from
// tokenizer.json, and LoadedTokenizer does not expose that JSON. So the wrapper does what the Rust
// AddedVocabulary does: split the text on exact occurrences of the added strings (leftmost, longest
// first), tokenize the text between them with the base tokenizer, and put the added ids in between.
// Text after an added token is tokenized as a non-first section (as in the Rust library, where e.g. a
// Metaspace prepend_scheme "first" adds no "▁" there) by encoding it behind one of the base's own added
// tokens and dropping that id. decode is the inverse: each stretch between added tokens is decoded alone.

import { withSplitTokens } from "./fast-encode.ts";
import type { LoadedTokenizer } from "./load.ts";

export interface AddedSpecialTokens {
  /** Token strings in the order transformers adds them; one the vocab already has keeps its id. */
  tokens: string[];
  bosToken?: string;
  eosToken?: string;
  padToken?: string;
  /** Becomes the tokenizer's default chat template. */
  chatTemplate?: string;
}

export interface WithAddedTokens {
  tokenizer: LoadedTokenizer;
  /** Ids given to strings the vocab did not have, in order; the embedding needs rows for them. */
  newTokenIds: number[];
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** A global regex matching any of `strings`, longest first at each position (Aho-Corasick LeftmostLongest). */
export function splitPattern(strings: Iterable<string>): RegExp | undefined {
  const sorted = [...new Set(strings)].filter((s) => s.length > 0).sort((a, b) => b.length - a.length);
  return sorted.length === 0 ? undefined : new RegExp(sorted.map(escapeRegExp).join("|"), "gu");
}

/** Ids encode(..., addSpecialTokens) puts around a text (e.g. [bos] before), found on a probe. */
export function specialAffixes(base: LoadedTokenizer): { before: number[]; after: number[] } {
  const plain = base.encode("a", { addSpecialTokens: false });
  const full = base.encode("a", { addSpecialTokens: true });
  for (let lead = 0; lead + plain.length <= full.length; lead++) {
    if (plain.every((id, i) => full[lead + i] === id)) {
      return { before: full.slice(0, lead), after: full.slice(lead + plain.length) };
    }
  }
  return { before: [], after: [] };
}

/** A tokenizer that also knows `spec.tokens` as special tokens, with bos/eos/pad set as given. */
export function addSpecialTokens(base: LoadedTokenizer, spec: AddedSpecialTokens): WithAddedTokens {
  const baseAdded = new Set(base.addedTokens.map((t) => t.content));
  // Like the Rust AddedVocabulary: new ids start after the model vocab and after every added id.
  let nextId = Math.max(base.vocabSize, ...base.addedTokens.map((t) => t.id + 1));
  const ownIds = new Map<string, number>(); // strings this wrapper splits on (the base splits its own)
  const newTokenIds: number[] = [];
  const added: { id: number; content: string; special: boolean }[] = [];
  for (const token of new Set(spec.tokens)) {
    if (baseAdded.has(token)) continue;
    const existing = base.tokenToId(token);
    const id = existing ?? nextId++;
    if (existing === undefined) newTokenIds.push(id);
    ownIds.set(token, id);
    added.push({ id, content: token, special: true });
  }
  const ownTokens = new Map([...ownIds].map(([token, id]) => [id, token]));
  const pattern = splitPattern(ownIds.keys());
  const baseAddedIds = new Set(base.addedTokens.map((t) => t.id));
  const decodeSplit = splitIds(baseAddedIds, ownTokens);

  // The base's own added token used as left context for sections that follow an added token.
  // It must come out as its own id and keep the text after it (no rstrip).
  const context = base.addedTokens.find((t) => {
    const alone = base.encode(t.content, { addSpecialTokens: false });
    return alone.length === 1 && alone[0] === t.id && base.encode(`${t.content}\n`, { addSpecialTokens: false }).length > 1;
  });
  const encodeSection = (text: string, first: boolean): number[] => {
    if (first || context === undefined) return base.encode(text, { addSpecialTokens: false });
    const ids = base.encode(context.content + text, { addSpecialTokens: false });
    return ids[0] === context.id ? ids.slice(1) : base.encode(text, { addSpecialTokens: false });
  };

  const decodeSection = sectionDecoder(base, context, encodeSection);

  const idOf = (token: string | undefined): number | undefined =>
    token === undefined ? undefined : (ownIds.get(token) ?? base.tokenToId(token));
  const bosToken = spec.bosToken ?? base.bosToken;
  const eosToken = spec.eosToken ?? base.eosToken;
  const padToken = spec.padToken ?? base.padToken;
  const bosTokenId = idOf(bosToken);
  const eosTokenId = idOf(eosToken);
  const padTokenId = idOf(padToken);
  // transformers rebuilds a Llama post-processor with the new bos/eos; other fixed ids stay as they were.
  const affixes = specialAffixes(base);
  const swap = (id: number): number =>
    id === base.bosTokenId && bosTokenId !== undefined ? bosTokenId : id === base.eosTokenId && eosTokenId !== undefined ? eosTokenId : id;
  const before = affixes.before.map(swap);
  const after = affixes.after.map(swap);

  // A section behind `context` encodes as it would alone when the base has a word encoder (each stretch
  // between added tokens is normalized on its own there, with nothing stripped), so sections split the same.
  const wordEncoder = base.wordEncoder === undefined ? undefined : withSplitTokens(base.wordEncoder, pattern, ownIds);

  const chatTemplates = spec.chatTemplate === undefined ? base.chatTemplates : { ...base.chatTemplates, default: spec.chatTemplate };
  const chatTemplate = spec.chatTemplate ?? base.chatTemplate;
  const tokenizer: LoadedTokenizer = {
    ...base,
    size: base.size + newTokenIds.length,
    addedTokens: [...base.addedTokens, ...added],
    chatTemplates,
    ...(chatTemplate === undefined ? {} : { chatTemplate }),
    ...(bosToken === undefined ? {} : { bosToken }),
    ...(eosToken === undefined ? {} : { eosToken }),
    ...(padToken === undefined ? {} : { padToken }),
    ...(bosTokenId === undefined ? {} : { bosTokenId }),
    ...(eosTokenId === undefined ? {} : { eosTokenId }),
    ...(padTokenId === undefined ? {} : { padTokenId }),
    wordEncoder,
    encode(text, options = {}) {
      const ids: number[] = [];
      let at = 0;
      if (pattern !== undefined) {
        for (const match of text.matchAll(pattern)) {
          if (match.index > at) ids.push(...encodeSection(text.slice(at, match.index), at === 0));
          ids.push(ownIds.get(match[0])!);
          at = match.index + match[0].length;
        }
      }
      if (at < text.length) ids.push(...encodeSection(text.slice(at), at === 0));
      return (options.addSpecialTokens ?? true) ? [...before, ...ids, ...after] : ids;
    },
    decode(ids, options = {}) {
      // Every token this wrapper adds is special, so skipSpecialTokens drops them all.
      const skip = options.skipSpecialTokens ?? false;
      return decodeSplit(ids)
        .map((part, i) => {
          if (typeof part === "string") return skip ? "" : part;
          if (part.length === 1 && baseAddedIds.has(part[0]!)) return base.decode(part, options);
          return i === 0 ? base.decode(part) : decodeSection(part);
        })
        .join("");
    },
    tokenToId: (token) => ownIds.get(token) ?? base.tokenToId(token),
    idToToken: (id) => ownTokens.get(id) ?? base.idToToken(id),
  };
  return { tokenizer, newTokenIds };
}

/**
 * The inverse of encoding a section that follows an added token. Whether the decoder's "strip the first
 * space" is right there depends on how the section was encoded (a Prepend normalizer adds a "▁" to every
 * section, a Metaspace "first" scheme to none after the first), so both ways are tried on probe texts.
 */
function sectionDecoder(
  base: LoadedTokenizer,
  context: { id: number; content: string } | undefined,
  encodeSection: (text: string, first: boolean) => number[],
): (ids: number[]) => string {
  const alone = (ids: number[]): string => base.decode(ids);
  if (context === undefined) return alone;
  const behindContext = (ids: number[]): string => {
    const text = base.decode([context.id, ...ids]);
    return text.startsWith(context.content) ? text.slice(context.content.length) : base.decode(ids);
  };
  const probes = [" a b", "a b", "\na"];
  const roundTrips = (decode: (ids: number[]) => string): boolean => probes.every((p) => decode(encodeSection(p, false)) === p);
  return roundTrips(alone) || !roundTrips(behindContext) ? alone : behindContext;
}

/**
 * Splits ids at added tokens: stretches of ordinary ids (decoded by the base) and added tokens (as text).
 * Only the wrapper's own tokens become strings here; base added tokens are cut out as one-id stretches so
 * that the text after them decodes as a section of its own, as it was encoded.
 */
function splitIds(baseAddedIds: ReadonlySet<number>, ownTokens: ReadonlyMap<number, string>): (ids: number[]) => (string | number[])[] {
  return (ids) => {
    const parts: (string | number[])[] = [];
    let run: number[] = [];
    for (const id of ids) {
      const own = ownTokens.get(id);
      if (own !== undefined || baseAddedIds.has(id)) {
        if (run.length > 0) parts.push(run);
        run = [];
        parts.push(own ?? [id]);
      } else {
        run.push(id);
      }
    }
    if (run.length > 0) parts.push(run);
    return parts;
  };
}
