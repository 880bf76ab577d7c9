import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseShardSize } from "../../src/cli/commands/merge.ts";
import { openWeights } from "../../src/io/safetensors/checkpoint.ts";
import { GOLDEN } from "../model/causal-lm/golden-harness.ts";
import { writeTiny } from "../model/causal-lm/tiny-model.ts";
import { runCli, type CliRun } from "./run-cli.ts";

const BASE = join(GOLDEN, "llama/model");
const ADAPTER = join(GOLDEN, "llama/adapter");
let root = "";

before(async () => {
  root = await mkdtemp(join(tmpdir(), "tuna-merge-cli-"));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

const run = (...args: string[]): Promise<CliRun> => runCli(args);

test("merge writes a model folder; the default dtype is the base's torch_dtype; --json describes it", async () => {
  const out = join(root, "plain");
  const r = await run("merge", BASE, "--adapter", ADAPTER, "--output-dir", out, "--json");
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out) as { dtype: string; mergedModules: number; weightFiles: string[]; outputDir: string };
  assert.equal(j.dtype, "float32");
  assert.equal(j.mergedModules, 14);
  assert.equal(j.outputDir, out);
  assert.deepEqual((await readdir(out)).sort(), ["config.json", "generation_config.json", "model.safetensors"]);

  const half = join(root, "half");
  const h = await run("merge", BASE, "--adapter", ADAPTER, "--output_dir", half, "--dtype", "float16", "--max_shard_size", "150KB");
  assert.equal(h.code, 0, h.err);
  assert.match(h.out, /merged 14 LoRA module\(s\) into .*half \(float16; \d+ weight file\(s\)/);
  const w = await openWeights(half);
  assert.ok(w.files.length > 1, "150KB shards split the 400KB model");
  assert.ok(w.names().every((n) => w.info(n).dtype === "F16"));
  await w.close();
  assert.equal((JSON.parse(await readFile(join(half, "config.json"), "utf8")) as { dtype: string }).dtype, "float16");
});

test("an existing non-empty OUT is refused without --overwrite and replaced with it", async () => {
  const out = join(root, "existing");
  await mkdir(out);
  await writeFile(join(out, "stale.txt"), "old");
  const r = await run("merge", BASE, "--adapter", ADAPTER, "--output_dir", out);
  assert.equal(r.code, 1);
  assert.match(r.err, /CONFIG_INVALID.*existing exists and is not empty.*--overwrite/);
  assert.equal(await readFile(join(out, "stale.txt"), "utf8"), "old", "the refused folder is untouched");

  const o = await run("merge", BASE, "--adapter", ADAPTER, "--output_dir", out, "--overwrite");
  assert.equal(o.code, 0, o.err);
  assert.deepEqual((await readdir(out)).sort(), ["config.json", "generation_config.json", "model.safetensors"]);
  assert.deepEqual((await readdir(root)).filter((n) => n.startsWith(".")), [], "no staging or set-aside folder remains");

  // An empty folder is fine without --overwrite.
  const empty = join(root, "empty");
  await mkdir(empty);
  assert.equal((await run("merge", BASE, "--adapter", ADAPTER, "--output_dir", empty)).code, 0);
});

test("an adapter that does not fit the base fails with the tensor and module named, and writes nothing", async () => {
  const { dir } = await writeTiny();
  const out = join(root, "mismatch");
  const r = await run("merge", dir, "--adapter", ADAPTER, "--output_dir", out);
  assert.equal(r.code, 1);
  assert.match(r.err, /MODEL_INVALID.*adapter_model\.safetensors: tensor base_model\.model\.model\.layers\.\d\.[a-z_.]+\.lora_[AB]\.weight has shape/);
  await assert.rejects(readdir(out), { code: "ENOENT" });
  await rm(join(dir, ".."), { recursive: true, force: true });

  // A rank in the config that disagrees with the tensors.
  const badRank = join(root, "bad-rank");
  await cp(ADAPTER, badRank, { recursive: true });
  const config = JSON.parse(await readFile(join(badRank, "adapter_config.json"), "utf8")) as Record<string, unknown>;
  await writeFile(join(badRank, "adapter_config.json"), JSON.stringify({ ...config, r: 8 }));
  const b = await run("merge", BASE, "--adapter", badRank, "--output_dir", out);
  assert.equal(b.code, 1);
  assert.match(b.err, /with rank 8 .*needs lora_/);
});

test("bad input: missing paths, missing and bad flags, OUT that is the adapter or a file", async () => {
  const out = join(root, "never");
  const missingAdapter = await run("merge", BASE, "--adapter", join(root, "nope"), "--output_dir", out);
  assert.equal(missingAdapter.code, 1);
  assert.match(missingAdapter.err, /FILE_NOT_FOUND.*adapter folder not found/);
  const missingBase = await run("merge", join(root, "no-model"), "--adapter", ADAPTER, "--output_dir", out);
  assert.equal(missingBase.code, 1);
  assert.match(missingBase.err, /no-model/);

  const flags = await run("merge", BASE, "--dtype", "int4", "--max_shard_size", "lots");
  assert.equal(flags.code, 1);
  assert.match(flags.err, /--adapter is required; --output_dir is required; --dtype must be one of bfloat16, float16, float32, got "int4"; --max_shard_size must be/);
  assert.match((await run("merge", BASE, "--adapter", ADAPTER, "--output_dir", out, "--bogus")).err, /CONFIG_UNKNOWN/);

  const intoAdapter = await run("merge", BASE, "--adapter", ADAPTER, "--output_dir", ADAPTER, "--overwrite");
  assert.equal(intoAdapter.code, 1);
  assert.match(intoAdapter.err, /CONFIG_INVALID.*is the adapter/);
  const file = join(root, "a-file");
  await writeFile(file, "x");
  assert.match((await run("merge", BASE, "--adapter", ADAPTER, "--output_dir", file, "--overwrite")).err, /is a file/);
  await assert.rejects(readdir(out), { code: "ENOENT" });
});

test("--max_shard_size reads transformers' units", () => {
  assert.equal(parseShardSize("5GB"), 5e9);
  assert.equal(parseShardSize("500MB"), 5e8);
  assert.equal(parseShardSize("2GiB"), 2 * 2 ** 30);
  assert.equal(parseShardSize("1024"), 1024);
  assert.equal(parseShardSize("0"), undefined);
  assert.equal(parseShardSize("5 parsecs"), undefined);
});
