// A single JSON Lines row of 50 MB (far past max_seq_length) goes through `tuna data` in a process whose
// heap is capped at 512 MB: it is read, cut and tokenized only as far as max_length needs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = new URL("../..", import.meta.url).pathname;

void test("a 50 MB row is tokenized only as far as max_length needs (512 MB heap, bounded time)", { timeout: 180_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), "tuna-huge-row-"));
  try {
    const data = join(dir, "train.jsonl");
    const file = await open(data, "w");
    await file.write('{"text": "short row"}\n{"text": "');
    const chunk = "the quick brown fox jumps over the lazy dog ".repeat(23_000); // ~1 MB
    for (let i = 0; i < 50; i++) await file.write(chunk);
    await file.write('"}\n');
    await file.close();
    const script = `import { main } from ${JSON.stringify(join(root, "src/cli/main.ts"))};
      process.exitCode = await main(process.argv.slice(1));`;
    const started = performance.now();
    const r = spawnSync(
      process.execPath,
      ["--max-old-space-size=512", "--import", "tsx", "--input-type=module", "-e", script, "data", "--model_name_or_path", join(root, "examples/tiny-llama"), "--dataset_name", data, "--splits", "train", "--max_seq_length", "128", "--output_dir", join(dir, "out"), "--json"],
      { cwd: root, encoding: "utf8", timeout: 170_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    const stats = JSON.parse(r.stdout) as { splits: { train: { rows: number; tokens: number; truncated: number } } };
    assert.equal(stats.splits.train.rows, 2);
    assert.equal(stats.splits.train.truncated, 1);
    assert.ok(stats.splits.train.tokens <= 128 + 16, `tokens ${stats.splits.train.tokens}`);
    assert.ok(performance.now() - started < 170_000);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
