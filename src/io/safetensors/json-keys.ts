// Detection of duplicate object keys in JSON text. JSON.parse silently keeps the last of two equal
// keys, but a safetensors header (and an index weight_map) with a repeated name is corrupt, so we scan.

export interface DuplicateKey {
  key: string;
  /** The key of the object that holds the duplicate; undefined for the top-level object. */
  parent: string | undefined;
}

interface Frame {
  isObject: boolean;
  keys: Set<string>;
  name: string | undefined;
  expectKey: boolean;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/**
 * The first key that appears twice in the same object, at any depth, or undefined.
 * `json` must already be valid JSON (call JSON.parse first): the scan only tracks strings and
 * brackets, and decodes keys with JSON.parse so that "a" and "\u0061" count as the same key.
 */
export function findDuplicateJsonKey(json: string): DuplicateKey | undefined {
  const stack: Frame[] = [];
  let lastKey: string | undefined;
  let i = 0;
  const n = json.length;
  while (i < n) {
    const c = json.charCodeAt(i);
    if (c === QUOTE) {
      const end = stringEnd(json, i);
      const top = stack[stack.length - 1];
      if (top?.isObject === true && top.expectKey) {
        const key = JSON.parse(json.slice(i, end + 1)) as string;
        if (top.keys.has(key)) return { key, parent: top.name };
        top.keys.add(key);
        top.expectKey = false;
        lastKey = key;
      }
      i = end + 1;
      continue;
    }
    if (c === 0x7b /* { */) {
      const parent = stack[stack.length - 1];
      const name = parent?.isObject === true ? lastKey : undefined;
      stack.push({ isObject: true, keys: new Set(), name, expectKey: true });
    } else if (c === 0x5b /* [ */) {
      stack.push({ isObject: false, keys: new Set(), name: undefined, expectKey: false });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
    } else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1];
      if (top?.isObject === true) top.expectKey = true;
    }
    i++;
  }
  return undefined;
}

/** Index of the closing quote of the string literal that opens at `start`. */
function stringEnd(json: string, start: number): number {
  let j = start + 1;
  for (;;) {
    const q = json.indexOf('"', j);
    if (q < 0) return json.length - 1;
    // The quote is escaped when preceded by an odd number of backslashes.
    let backslashes = 0;
    for (let k = q - 1; k > start && json.charCodeAt(k) === BACKSLASH; k--) backslashes++;
    if (backslashes % 2 === 0) return q;
    j = q + 1;
  }
}
