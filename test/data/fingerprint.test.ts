import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { datasetFingerprint } from "../../src/data/fingerprint.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "tuna-fingerprint-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Writes a file and dates it an hour back, so its hash may be remembered (a fresh file is "racy"). */
async function writeOld(path: string, text: string, hoursAgo = 1): Promise<void> {
  await writeFile(path, text);
  const when = new Date(Date.now() - hoursAgo * 3600_000);
  await utimes(path, when, when);
}

test("fingerprint: changes with a file's content or an option, not with key order, mtime or a rewrite of the same bytes", async () => {
  await withDir(async (dir) => {
    const data = join(dir, "train.jsonl");
    const tok = join(dir, "tokenizer.json");
    await writeOld(data, '{"text":"a"}\n');
    await writeOld(tok, "{}");
    const parts = { files: [{ path: data }, { path: tok }], template: "{{ messages }}", maxLength: 1024, packing: { strategy: "bfd", chunkSize: undefined } };
    const fp = await datasetFingerprint(parts);
    assert.match(fp, /^[0-9a-f]{64}$/);
    assert.equal(await datasetFingerprint({ packing: { strategy: "bfd" }, maxLength: 1024, template: "{{ messages }}", files: [{ path: data }, { path: tok }] }), fp);
    assert.notEqual(await datasetFingerprint({ ...parts, maxLength: 2048 }), fp);
    assert.notEqual(await datasetFingerprint({ ...parts, template: "{{ messages }} " }), fp);
    assert.notEqual(await datasetFingerprint({ ...parts, packing: { strategy: "wrapped" } }), fp);
    assert.notEqual(await datasetFingerprint({ ...parts, files: [{ path: tok }, { path: data }] }), fp, "file order is row order");
    assert.notEqual(await datasetFingerprint({ ...parts, files: [{ path: data, split: "test" }, { path: tok }] }), fp);
    // Same bytes, new mtime: same fingerprint.
    await writeFile(data, '{"text":"a"}\n');
    assert.equal(await datasetFingerprint(parts), fp);
    // New bytes of the same size: another fingerprint.
    await writeOld(data, '{"text":"b"}\n');
    assert.notEqual(await datasetFingerprint(parts), fp);
  });
});

test("fingerprint: the sidecar remembers content hashes by path, size and mtime", async () => {
  await withDir(async (dir) => {
    const data = join(dir, "train.jsonl");
    const fresh = join(dir, "fresh.jsonl");
    const sidecar = join(dir, "cache", "file-hashes.json");
    await writeOld(data, "row 1\nrow 2\n");
    await writeFile(fresh, "just written\n");
    const parts = { files: [{ path: data }, { path: fresh }] };
    const fp = await datasetFingerprint(parts, { hashCacheFile: sidecar });
    assert.equal(await datasetFingerprint(parts), fp, "the sidecar does not change the fingerprint");

    const side = JSON.parse(await readFile(sidecar, "utf8")) as { files: Record<string, { size: number; sha256: string }> };
    const expectedSha = createHash("sha256").update("row 1\nrow 2\n").digest("hex");
    assert.deepEqual(Object.keys(side.files), [resolve(data)], "a file modified within the last seconds is not remembered");
    assert.equal(side.files[resolve(data)]!.sha256, expectedSha);
    assert.equal(side.files[resolve(data)]!.size, 12);

    // Prove the re-run trusts the sidecar instead of re-reading: plant a wrong hash under the same size and mtime.
    side.files[resolve(data)]!.sha256 = "0".repeat(64);
    await writeFile(sidecar, JSON.stringify(side));
    assert.notEqual(await datasetFingerprint(parts, { hashCacheFile: sidecar }), fp);
    // A changed mtime invalidates the entry: the file is read again and the true hash comes back.
    await writeOld(data, "row 1\nrow 2\n", 2);
    assert.equal(await datasetFingerprint(parts, { hashCacheFile: sidecar }), fp);
    // An in-place edit of the same size with the old mtime restored is seen (ctime moved): no stale hash.
    const stamp = await stat(data);
    await writeFile(data, "row 9\nrow 9\n");
    await utimes(data, stamp.atime, stamp.mtime);
    assert.equal((await stat(data)).mtimeMs, stamp.mtimeMs);
    const edited = await datasetFingerprint(parts, { hashCacheFile: sidecar });
    assert.notEqual(edited, fp);
    assert.equal(edited, await datasetFingerprint(parts), "the sidecar served a stale hash");
    await writeOld(data, "row 1\nrow 2\n", 3);
    // A damaged sidecar is ignored.
    await writeFile(sidecar, "{ not json");
    assert.equal(await datasetFingerprint(parts, { hashCacheFile: sidecar }), fp);
  });
});

test("fingerprint: a missing file is FILE_NOT_FOUND naming it; non-JSON options are refused", async () => {
  await withDir(async (dir) => {
    const missing = join(dir, "nope.jsonl");
    await assert.rejects(() => datasetFingerprint({ files: [{ path: missing }] }), (e: unknown) => {
      assert.equal((e as { code?: string }).code, "FILE_NOT_FOUND");
      assert.match(String(e), /nope\.jsonl/);
      return true;
    });
    await assert.rejects(() => datasetFingerprint({ files: [], formatter: () => "x" }), /fingerprint\.parts\.formatter is a function/);
    // NaN and null are different options.
    assert.notEqual(await datasetFingerprint({ files: [], x: Number.NaN }), await datasetFingerprint({ files: [], x: null }));
  });
});
