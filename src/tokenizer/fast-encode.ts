// Word-split encoding for sentencepiece-style BPE tokenizers (normalizer Prepend("▁") + Replace(" ", "▁") and no
// pre-tokenizer, or transformers 5's Metaspace pre-tokenizer without split): the text is cut where no merge can
// cross, each word is BPE'd once and cached.
//
// Without a pre-tokenizer @huggingface/tokenizers runs BPE over each stretch between added tokens as one
// "word", so its word cache never hits. BPE merges the lowest-ranked adjacent pair (leftmost on ties) until
// none applies; a merge across position p joins a symbol ending in text[p-1] with one starting at text[p].
// If no merge (a, b) has a ending in text[p-1] and b starting in text[p], nothing ever crosses p, so the
// pieces on either side merge exactly as they would inside the whole stretch, and the ids are the same.
// Cuts used: before and after characters that no merge can join there (newlines and digits for Llama), and
// before a "▁" that follows another character when no merge puts "▁" after anything but "▁".
// The conditions are checked when the tokenizer is loaded; otherwise there is no WordEncoder and the
// library encodes the whole text. Everything else (added-token splitting, byte fallback) is the library's.

export interface TextUnits {
  /** The ids, as the library's encode(text, { add_special_tokens: false }) gives them. */
  ids: number[];
  /** Unit k (a word or an added token) covers characters [ends[k-1] ?? 0, ends[k]) of the text. */
  ends: number[];
  /** ...and ids [tokenEnds[k-1] ?? 0, tokenEnds[k]). */
  tokenEnds: number[];
  /** UNIT_WORD, UNIT_SECTION_START (a word that carries the normalizer's prepended "▁") or UNIT_ADDED. */
  kinds: number[];
}

export const UNIT_WORD = 0;
export const UNIT_SECTION_START = 1;
export const UNIT_ADDED = 2;

export interface WordEncoder {
  /** The ids of the library's encode(text, { add_special_tokens: false }). */
  encode(text: string): number[];
  /** The same ids with the words and added tokens they come from. */
  encodeUnits(text: string): TextUnits;
  /**
   * For a cut strictly inside unit k: the ids that unit contributes to the encoding of text.slice(0, cut)
   * (what precedes it is the units before k). Undefined when unit k is an added token.
   */
  encodeUnitPrefix(text: string, units: TextUnits, k: number, cut: number): number[] | undefined;
}

const SPACE_MARK = 0x2581; // "▁"
const MAY_START_RIGHT = 1; // the character begins the right side of some merge
const MAY_END_LEFT = 2; // the character ends the left side of some merge
const CACHE_WORDS = 1 << 16;
const CACHE_WORD_CHARS = 64;

// The parts of @huggingface/tokenizers 0.2.0's Tokenizer and BPE objects used here, read through `unknown`
// and checked, since the package's own declarations cannot be resolved (see load.ts).
interface LibraryBpe {
  (words: string[]): string[];
  tokens_to_ids: Map<string, number>;
  unk_token_id: unknown;
  merges: unknown[];
}
interface LibraryParts {
  split: (text: string) => string[];
  addedIdOf: Map<string, { id: number }>;
  model: LibraryBpe;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

function normalizerIsSentencepiece(normalizer: unknown): boolean {
  if (!isObject(normalizer) || normalizer.type !== "Sequence" || !Array.isArray(normalizer.normalizers)) return false;
  const [prepend, replace, ...rest] = normalizer.normalizers as unknown[];
  if (rest.length > 0 || !isObject(prepend) || !isObject(replace)) return false;
  const pattern = replace.pattern;
  return (
    prepend.type === "Prepend" &&
    prepend.prepend === "▁" &&
    replace.type === "Replace" &&
    isObject(pattern) &&
    pattern.String === " " &&
    Object.keys(pattern).length === 1 &&
    replace.content === "▁"
  );
}

// Whether the library's post-processor hands the ids of one text back unchanged when no special tokens
// are added (TemplateProcessing keeps its "A" sequence and drops the special tokens around it).
function postProcessorKeepsTokens(post: unknown): boolean {
  if (post === null || post === undefined) return true;
  if (!isObject(post)) return false;
  switch (post.type) {
    case "ByteLevel":
    case "BertProcessing":
    case "RobertaProcessing":
      return true;
    case "TemplateProcessing": {
      const single: unknown[] = Array.isArray(post.single) ? post.single : [];
      const isA = (item: unknown): boolean => isObject(item) && isObject(item.Sequence) && item.Sequence.id === "A";
      const isSpecial = (item: unknown): boolean => isObject(item) && "SpecialToken" in item;
      return single.filter(isA).length === 1 && single.every((item) => isA(item) || isSpecial(item));
    }
    case "Sequence":
      return Array.isArray(post.processors) && post.processors.every(postProcessorKeepsTokens);
    default:
      return false;
  }
}

/** The library internals this needs, or why they are not there (another package version). */
function libraryParts(library: unknown): LibraryParts | string {
  if (!isObject(library) && typeof library !== "function") return "the tokenizer object is not the expected shape";
  const lib = library as Record<string, unknown>;
  const splitter = lib.splitter_unnormalized;
  const model = lib.model;
  if (!isObject(splitter) || typeof splitter.split !== "function") return "no added-token splitter";
  if (!(lib.added_tokens_map instanceof Map)) return "no added-token map";
  if (typeof model !== "function") return "the model is not callable";
  const m = model as unknown as Record<string, unknown>;
  if (!(m.tokens_to_ids instanceof Map) || !Array.isArray(m.merges)) return "the model has no vocab or merges";
  const split = (splitter.split as (text: string) => string[]).bind(splitter);
  return { split, addedIdOf: lib.added_tokens_map as Map<string, { id: number }>, model: model as unknown as LibraryBpe };
}

/**
 * Where each stretch between added tokens gets its "▁": "normalizer" (Prepend + Replace: always, even before a
 * space), or a Metaspace pre-tokenizer's "always" (transformers 5's Llama tokenizer with legacy: only when the
 * stretch does not already start with one). Undefined for any other front end.
 */
type PrependScheme = "normalizer" | "always";

function prependScheme(json: Record<string, unknown>): PrependScheme | undefined {
  const pre = json.pre_tokenizer;
  const none = json.normalizer === null || json.normalizer === undefined;
  if ((pre === null || pre === undefined) && normalizerIsSentencepiece(json.normalizer)) return "normalizer";
  if (!none || !isObject(pre) || pre.type !== "Metaspace" || (pre.replacement ?? "▁") !== "▁" || pre.split === true) return undefined;
  // "first" depends on a stretch's place in the whole text, which wrappers that split further (added-tokens.ts)
  // do not pass down: those tokenizers encode through the library.
  return (pre.prepend_scheme ?? "always") === "always" ? "always" : undefined;
}

/** Why the word split would change the ids for this tokenizer, or undefined when it is exact. */
function inapplicable(library: Record<string, unknown>, json: Record<string, unknown>, parts: LibraryParts): string | undefined {
  const model = json.model;
  if (!isObject(model) || model.type !== "BPE") return "the model is not BPE";
  if (prependScheme(json) === undefined) return 'the normalizer and pre-tokenizer are neither Prepend("▁") + Replace(" " -> "▁") nor a Metaspace pre-tokenizer without split';
  if (library.remove_space === true || library.do_lowercase_and_remove_accent) return "the config rewrites text before normalizing";
  if (!postProcessorKeepsTokens(json.post_processor)) return "the post-processor may change the ids even without special tokens";
  const addedTokens = library.added_tokens;
  if (!Array.isArray(addedTokens)) return "no added-token list";
  for (const t of addedTokens as unknown[]) {
    if (!isObject(t) || Boolean(t.lstrip) || Boolean(t.rstrip) || Boolean(t.normalized)) {
      return "an added token strips spaces or is matched after normalizing";
    }
  }
  const lib = parts.model as unknown as Record<string, unknown>;
  if ((model.dropout ?? null) !== null && model.dropout !== 0) return "BPE dropout is set";
  if (lib.ignore_merges) return "ignore_merges is set (a whole word in the vocab skips BPE)";
  if (lib.end_of_word_suffix || lib.continuing_subword_suffix || model.continuing_subword_prefix) {
    return "a word suffix or subword prefix depends on where words end";
  }
  const vocab = parts.model.tokens_to_ids;
  let allBytes = lib.byte_fallback === true;
  for (let b = 0; allBytes && b < 256; b++) allBytes = vocab.has(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
  // Unknown pieces fuse across a whole stretch; with every byte token present there are none.
  if (lib.fuse_unk && !allBytes) return "unknown pieces are fused and byte fallback does not cover every byte";
  if (!allBytes && typeof parts.model.unk_token_id !== "number") return "a piece without an id would have no unk id";
  return undefined;
}

/** Which characters can sit on either side of a merge, and whether "▁" only ever follows "▁" in one. */
function mergeJunctions(merges: unknown[]): { flags: Uint8Array; spaceCuts: boolean } | string {
  const flags = new Uint8Array(65536);
  // A surrogate stands for a character whose merges are not looked at: never cut next to it on its account.
  flags.fill(MAY_START_RIGHT | MAY_END_LEFT, 0xd800, 0xe000);
  let spaceCuts = true;
  for (const merge of merges) {
    if (!Array.isArray(merge) || typeof merge[0] !== "string" || typeof merge[1] !== "string") return "a merge is not a pair of strings";
    const [left, right] = merge as [string, string];
    if (left.length === 0 || right.length === 0) return "a merge has an empty side";
    const last = left.charCodeAt(left.length - 1);
    const first = right.charCodeAt(0);
    flags[last]! |= MAY_END_LEFT;
    flags[first]! |= MAY_START_RIGHT;
    if (first === SPACE_MARK && last !== SPACE_MARK) spaceCuts = false;
  }
  return { flags, spaceCuts };
}

/** A WordEncoder over the library's tokenizer when the split is exact for it, else the reason it is not. */
export function createWordEncoder(library: unknown, tokenizerJson: Record<string, unknown>): { encoder: WordEncoder } | { reason: string } {
  const parts = libraryParts(library);
  if (typeof parts === "string") return { reason: parts };
  const reason = inapplicable(library as Record<string, unknown>, tokenizerJson, parts);
  if (reason !== undefined) return { reason };
  const junctions = mergeJunctions(parts.model.merges);
  if (typeof junctions === "string") return { reason: junctions };
  if (!junctions.spaceCuts) return { reason: 'a merge puts "▁" after another character, so words cannot be cut at spaces' };
  return { encoder: wordEncoder(parts, junctions.flags, prependScheme(tokenizerJson)!) };
}

function wordEncoder(parts: LibraryParts, flags: Uint8Array, scheme: PrependScheme): WordEncoder {
  const { split, addedIdOf, model } = parts;
  const vocab = model.tokens_to_ids;
  const unkId = model.unk_token_id as number;
  const cache = new Map<string, number[]>();

  // The library's model on one word, and its token-to-id lookup (Tokenizer.encode's, added tokens first).
  const bpeWord = (word: string): number[] => model([word]).map((t) => addedIdOf.get(t)?.id ?? vocab.get(t) ?? unkId);
  const cachedWord = (word: string): number[] => {
    let ids = cache.get(word);
    if (ids === undefined) {
      ids = bpeWord(word);
      if (word.length <= CACHE_WORD_CHARS) {
        if (cache.size >= CACHE_WORDS) cache.delete(cache.keys().next().value!);
        cache.set(word, ids);
      }
    }
    return ids;
  };
  const cutBetween = (before: number, after: number): boolean =>
    (flags[before]! & MAY_END_LEFT) === 0 || (flags[after]! & MAY_START_RIGHT) === 0 || (after === SPACE_MARK && before !== SPACE_MARK);

  // One stretch between added tokens, normalized as the library does, cut into words; `at` is where the
  // stretch starts in the text (normalized index q is text index at + q - lead, lead = 1 behind a prepended "▁").
  const encodeSection = (section: string, at: number, out: number[], units: TextUnits | undefined): void => {
    const replaced = section.replaceAll(" ", "▁");
    const prepend = scheme === "normalizer" || !replaced.startsWith("▁");
    const lead = prepend ? 1 : 0;
    const normalized = prepend ? "▁" + replaced : replaced;
    let start = 0;
    let previous = normalized.charCodeAt(0);
    const word = (end: number): void => {
      for (const id of cachedWord(normalized.slice(start, end))) out.push(id);
      if (units !== undefined) {
        units.ends.push(at + end - lead);
        units.tokenEnds.push(out.length);
        units.kinds.push(start === 0 && prepend ? UNIT_SECTION_START : UNIT_WORD);
      }
      start = end;
    };
    for (let q = 1; q < normalized.length; q++) {
      const c = normalized.charCodeAt(q);
      if (cutBetween(previous, c)) word(q);
      previous = c;
    }
    word(normalized.length);
  };

  const encodeInto = (text: string, units: TextUnits | undefined): number[] => {
    const out: number[] = [];
    let at = 0;
    for (const section of split(text)) {
      const added = addedIdOf.get(section);
      if (added !== undefined) {
        out.push(added.id);
        if (units !== undefined) {
          units.ends.push(at + section.length);
          units.tokenEnds.push(out.length);
          units.kinds.push(UNIT_ADDED);
        }
      } else if (section.length > 0) {
        encodeSection(section, at, out, units);
      }
      at += section.length;
    }
    return out;
  };

  return {
    encode: (text) => encodeInto(text, undefined),
    encodeUnits(text) {
      const units: TextUnits = { ids: [], ends: [], tokenEnds: [], kinds: [] };
      units.ids = encodeInto(text, units);
      return units;
    },
    encodeUnitPrefix(text, units, k, cut) {
      const kind = units.kinds[k];
      if (kind === undefined || kind === UNIT_ADDED) return undefined;
      // The cut text's last stretch ends inside this word; a prefix of a word has no cut of its own.
      const piece = text.slice(k === 0 ? 0 : units.ends[k - 1]!, cut).replaceAll(" ", "▁");
      return bpeWord(kind === UNIT_SECTION_START ? "▁" + piece : piece);
    },
  };
}

/**
 * A WordEncoder for a tokenizer that splits off `pattern`'s strings before handing the text between them
 * to `inner`'s tokenizer (added-tokens.ts), each stretch on its own.
 */
export function withSplitTokens(inner: WordEncoder, pattern: RegExp | undefined, idOf: ReadonlyMap<string, number>): WordEncoder {
  if (pattern === undefined) return inner;
  const encodeUnits = (text: string): TextUnits => {
    const units: TextUnits = { ids: [], ends: [], tokenEnds: [], kinds: [] };
    const append = (from: number, to: number): void => {
      const part = inner.encodeUnits(text.slice(from, to));
      const base = units.ids.length;
      for (const id of part.ids) units.ids.push(id);
      for (let k = 0; k < part.ends.length; k++) {
        units.ends.push(from + part.ends[k]!);
        units.tokenEnds.push(base + part.tokenEnds[k]!);
        units.kinds.push(part.kinds[k]!);
      }
    };
    let at = 0;
    for (const match of text.matchAll(pattern)) {
      if (match.index > at) append(at, match.index);
      at = match.index + match[0].length;
      units.ids.push(idOf.get(match[0])!);
      units.ends.push(at);
      units.tokenEnds.push(units.ids.length);
      units.kinds.push(UNIT_ADDED);
    }
    if (at < text.length) append(at, text.length);
    return units;
  };
  return {
    encode: (text) => encodeUnits(text).ids,
    encodeUnits,
    encodeUnitPrefix: (text, units, k, cut) => inner.encodeUnitPrefix(text, units, k, cut),
  };
}
