import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PREPARED_CACHE_FORMAT_VERSION, preparedCachePath, readPreparedCache, writePreparedCache, type PreparedData } from "../../src/data/cache.ts";
import type { PackedSequence, SplitStats } from "../../src/data/types.ts";
import { createRng } from "../../src/util/random.ts";

const FP = "ab".repeat(32);

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "tuna-cache-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function sampleData(seed: number, n: number): PreparedData {
  const rng = createRng(seed);
  const sequences: PackedSequence[] = Array.from({ length: n }, (_, i) => {
    const docLengths = Array.from({ length: 1 + Math.floor(rng.uniform() * 3) }, () => 1 + Math.floor(rng.uniform() * 9));
    const len = docLengths.reduce((a, b) => a + b, 0);
    return {
      inputIds: Int32Array.from({ length: len }, () => Math.floor(rng.uniform() * 150_000) - 5),
      trained: Uint8Array.from({ length: len }, () => (rng.uniform() < 0.5 ? 1 : 0)),
      docLengths,
      rows: docLengths.map((_, d) => i * 3 + d),
    };
  });
  const tokens = sequences.reduce((a, s) => a + s.inputIds.length, 0);
  const stats: SplitStats = { split: "train", rows: n * 2, dropped: 1, truncated: 2, tokens, trainedTokens: 17, sequences: n, packingEfficiency: 0.875 };
  return { sequences, stats, meta: { tokenizer: "tiny", template: "{{ x }}", maxLength: 16 } };
}

const plainSeqs = (seqs: PackedSequence[]): unknown[] =>
  seqs.map((s) => ({ ids: Array.from(s.inputIds), trained: Array.from(s.trained), docs: s.docLengths, rows: s.rows }));

test("prepared cache: round trip of sequences, stats and meta; written by rename, no temp file left", async () => {
  await withDir(async (dir) => {
    const data = sampleData(1, 57);
    const path = await writePreparedCache(join(dir, "cache"), FP, data);
    assert.equal(path, preparedCachePath(join(dir, "cache"), FP));
    assert.deepEqual(await readdir(join(dir, "cache")), [`${FP}.tunadata`]);
    const read = await readPreparedCache(join(dir, "cache"), FP);
    assert.ok(read.hit);
    assert.deepEqual(plainSeqs(read.data.sequences), plainSeqs(data.sequences));
    assert.ok(read.data.sequences.every((s) => s.inputIds instanceof Int32Array && s.trained instanceof Uint8Array));
    assert.deepEqual(read.data.stats, data.stats);
    assert.deepEqual(read.data.meta, data.meta);
    // Binary, not JSON arrays: the file is about 5 bytes per token plus small tables and the header.
    const bytes = await readFile(path);
    assert.ok(bytes.length < data.stats.tokens * 5 + 57 * 12 + 4096, `${bytes.length} bytes`);
    assert.equal(bytes.toString("latin1", 0, 8), "TUNADATA");
  });
});

test("prepared cache: an empty split (NaN efficiency) round-trips; a missing file is a plain miss", async () => {
  await withDir(async (dir) => {
    const miss = await readPreparedCache(dir, FP);
    assert.deepEqual(miss, { hit: false, path: preparedCachePath(dir, FP) });
    const empty = sampleData(2, 0);
    // 0 tokens over 0 sequences: a NaN efficiency must survive the JSON header.
    await writePreparedCache(dir, FP, { ...empty, stats: { ...empty.stats, packingEfficiency: Number.NaN }, meta: null });
    const read = await readPreparedCache(dir, FP);
    assert.ok(read.hit);
    assert.deepEqual(read.data.sequences, []);
    assert.ok(Number.isNaN(read.data.stats.packingEfficiency));
    assert.equal(read.data.meta, null);
  });
});

/** Replaces the first occurrence of `from` in the file's header by `to` (same length). */
async function patchHeader(path: string, from: string, to: string): Promise<void> {
  assert.equal(from.length, to.length);
  const bytes = await readFile(path);
  const at = bytes.indexOf(from, 0, "latin1");
  assert.ok(at > 0, `${from} not found`);
  bytes.write(to, at, "latin1");
  await writeFile(path, bytes);
}

test("prepared cache: another format version is a miss with a notice", async () => {
  await withDir(async (dir) => {
    const path = await writePreparedCache(dir, FP, sampleData(3, 5));
    await patchHeader(path, `"version":${PREPARED_CACHE_FORMAT_VERSION}`, `"version":9`);
    const read = await readPreparedCache(dir, FP);
    assert.equal(read.hit, false);
    assert.match(read.notice ?? "", /cache format version 9 and this tuna reads version 1/);
  });
});

test("prepared cache: damaged files are misses with a notice, never a crash", async () => {
  await withDir(async (dir) => {
    const data = sampleData(4, 20);
    const cases: [string, (path: string) => Promise<void>, RegExp][] = [
      ["flipped token byte", async (p) => {
        const bytes = await readFile(p);
        bytes[bytes.length - 30]! ^= 0x40;
        await writeFile(p, bytes);
      }, /checksum/],
      ["truncated", (p) => truncate(p, 100), /header length|bytes but its header/],
      ["cut in the blobs", async (p) => truncate(p, (await readFile(p)).length - 8), /bytes but its header describes/],
      ["not a cache file", (p) => writeFile(p, "hello world, this is not a cache"), /bad magic/],
      ["empty", (p) => writeFile(p, ""), /ends early/],
      ["header not JSON", (p) => patchHeader(p, `{"version"`, `{"version'`), /not valid JSON/],
      ["fingerprint of another dataset", (p) => patchHeader(p, FP.slice(0, 8), "cdcdcdcd"), /holds fingerprint/],
      ["stats missing", (p) => patchHeader(p, `"stats"`, `"stat_"`), /lacks sequences, stats/],
    ];
    for (const [what, damage, why] of cases) {
      const path = await writePreparedCache(dir, FP, data);
      await damage(path);
      const read = await readPreparedCache(dir, FP);
      assert.equal(read.hit, false, what);
      const notice = read.notice ?? "";
      assert.match(notice, why, what);
      assert.match(notice, /preparing the data again/, what);
    }
  });
});

test("prepared cache: fingerprints must be hex digests (they become file names)", async () => {
  await assert.rejects(() => readPreparedCache(tmpdir(), "../../etc/passwd"), /not a lowercase hex digest/);
});
