// `tuna data` through main(): the statistics table and JSON on a small chat dataset with tiny-llama, the
// cache shared with `tuna train`, --show with the trained tokens bracketed, and dataset errors as exit 1.
// Expected counts come from the token pieces written by hand in test/data/tokenize-assistant.test.ts:
// chatml puts "<|im_start|>ROLE", "▁", "<0x0A>" before each content and "<|im_end|>", "▁", "<0x0A>" after it.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { main } from "../../src/cli/main.ts";
import { memoryOutput } from "../../src/cli/output.ts";

const TINY = fileURLToPath(new URL("../../examples/tiny-llama", import.meta.url));
let root: string;

const HI = [
  { role: "user", content: "Hi" },
  { role: "assistant", content: "Hello there" },
];
const MULTI = [
  { role: "system", content: "Be brief." },
  ...HI,
  { role: "user", content: "Thanks" },
  { role: "assistant", content: "You are welcome" },
];
const THANKS = [
  { role: "user", content: "Thanks" },
  { role: "assistant", content: "You are welcome" },
];

const jsonl = (rows: unknown[]): string => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";

before(async () => {
  root = await mkdtemp(join(tmpdir(), "tuna-data-cli-"));
  await mkdir(join(root, "chat"));
  await writeFile(join(root, "chat", "train.jsonl"), jsonl([{ messages: HI }, { messages: MULTI }]));
  await writeFile(join(root, "chat", "test.jsonl"), jsonl([{ messages: THANKS }]));
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

function flags(dataset: string, outputDir: string): string[] {
  return [
    "--model_name_or_path", TINY, "--dataset_name", dataset, "--output_dir", outputDir,
    "--chat_template_format", "chatml", "--assistant_only_loss", "--packing", "--max_seq_length", "64",
  ];
}

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = memoryOutput();
  const code = await main(["data", ...args], output);
  // As the process would print it: each write ends with a newline.
  const text = (writes: string[]): string => writes.map((t) => (t.endsWith("\n") ? t : `${t}\n`)).join("");
  return { code, stdout: text(output.stdout), stderr: text(output.stderr) };
}

/** The table's row for a split, by column name. */
function tableRow(stdout: string, split: string): Record<string, string> {
  const lines = stdout.split("\n");
  const header = lines[0]!.trim().split(/\s+/);
  const line = lines.find((l) => l.startsWith(`${split} `));
  assert.ok(line !== undefined, `a row for ${split} in:\n${stdout}`);
  const cells = line.trim().split(/\s+/);
  return Object.fromEntries(header.map((h, i) => [h, cells[i]!]));
}

// train: HI is 15 tokens (3 trained: Hello, ▁there, <|im_end|>), MULTI 9 + 7 + 8 + 7 + 9 = 40 (3 + 4 trained);
// both fit one 64-token bin. test: THANKS is 7 + 9 = 16 tokens, 4 trained.
const EXPECTED = {
  train: { rows: 2, tokens: 55, trainedTokens: 10, truncated: 0, dropped: 0, sequences: 1, packingEfficiency: 55 / 64 },
  test: { rows: 1, tokens: 16, trainedTokens: 4, truncated: 0, dropped: 0, sequences: 1, packingEfficiency: 16 / 64 },
};

const SHOWN_HI = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n[[Hello there<|im_end|>]]\n";
const SHOWN_MULTI =
  "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n[[Hello there<|im_end|>]]\n" +
  "<|im_start|>user\nThanks<|im_end|>\n<|im_start|>assistant\n[[You are welcome<|im_end|>]]\n";

function assertShown(stdout: string): void {
  assert.match(stdout, /trained tokens between \[\[ and \]\]/);
  const blocks = stdout.split(/^--- train row \d+: \d+ tokens, \d+ trained ---\n/m).slice(1);
  assert.deepEqual(blocks, [SHOWN_HI, SHOWN_MULTI]);
  assert.match(stdout, /^--- train row 0: 15 tokens, 3 trained ---$/m);
  assert.match(stdout, /^--- train row 1: 40 tokens, 7 trained ---$/m);
}

test("tuna data: every split in the table with consistent numbers, then JSON from the cache, then tuna train hits it", async () => {
  const out = join(root, "run");
  const args = [...flags(join(root, "chat"), out), "--splits", "train,test"];
  const first = await run([...args, "--show", "2"]);
  assert.equal(first.code, 0, first.stderr);
  for (const split of ["train", "test"] as const) {
    const row = tableRow(first.stdout, split);
    const e = EXPECTED[split];
    assert.deepEqual(
      [row["rows"], row["tokens"], row["trained"], row["truncated"], row["dropped"], row["sequences"], row["efficiency"], row["cached"]],
      [e.rows, e.tokens, e.trainedTokens, e.truncated, e.dropped, e.sequences, `${(100 * e.packingEfficiency).toFixed(1)}%`, "no"].map(String),
    );
    assert.ok(Number(row["trained"]) <= Number(row["tokens"]));
  }
  assert.match(first.stdout, new RegExp(`^cache: ${join(out, ".tuna-cache").replaceAll(".", "\\.")}$`, "m"));
  // Fresh: the tokenized examples are shown.
  assertShown(first.stdout);

  const second = await run([...args, "--json", "--show", "2"]);
  assert.equal(second.code, 0, second.stderr);
  const parsed = JSON.parse(second.stdout) as { splits: Record<string, Record<string, unknown>>; cache: string; examples: { rows: number[]; text: string }[] };
  assert.equal(parsed.cache, join(out, ".tuna-cache"));
  assert.deepEqual(Object.keys(parsed.splits), ["train", "test"]);
  for (const split of ["train", "test"] as const) {
    assert.deepEqual(parsed.splits[split], { ...EXPECTED[split], cached: true });
    const eff = parsed.splits[split].packingEfficiency;
    assert.ok(eff > 0 && eff <= 1);
  }
  // From the cache: the packed documents give the same examples.
  assert.deepEqual(parsed.examples.map((e) => [e.rows, e.text]), [[[0], SHOWN_HI], [[1], SHOWN_MULTI]]);

  // `tuna train` with the same flags finds what `tuna data` prepared.
  const train = memoryOutput();
  const code = await main(["train", ...args, "--max_steps", "1", "--report_to", "none"], train);
  assert.equal(code, 0, train.stderr.join("\n"));
  const stderr = train.stderr.join("\n");
  assert.match(stderr, /^train: 2 rows -> 1 sequences, 55 tokens \(10 trained\).*\[cached\]$/m);
  assert.match(stderr, /^test: 1 rows -> 1 sequences, 16 tokens \(4 trained\).*\[cached\]$/m);
});

test("--show from the cache prints the same marked text; --no_cache prepares again without reading the cache", async () => {
  const args = [...flags(join(root, "chat", "train.jsonl"), join(root, "single")), "--splits", "train"];
  assert.equal((await run(args)).code, 0);
  const cached = await run([...args, "--show", "2"]);
  assert.equal(tableRow(cached.stdout, "train")["cached"], "yes");
  assertShown(cached.stdout);
  const fresh = await run([...args, "--no_cache", "--json"]);
  const parsed = JSON.parse(fresh.stdout) as { splits: { train: { cached: boolean; tokens: number } }; cache: unknown };
  assert.equal(parsed.cache, null);
  assert.equal(parsed.splits.train.cached, false);
  assert.equal(parsed.splits.train.tokens, 55);
});

test("a malformed JSONL line: exit 1 with file:line", async () => {
  const dir = join(root, "broken");
  await mkdir(dir);
  await writeFile(join(dir, "train.jsonl"), `${JSON.stringify({ messages: HI })}\n{"messages": [\n`);
  const r = await run([...flags(dir, join(root, "broken-out")), "--splits", "train"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /tuna data: error \[FILE_FORMAT\]: .*train\.jsonl:2: not valid JSON/);
  assert.equal(r.stdout, "");
});

test("columns of no known format: exit 1 naming the columns", async () => {
  const file = join(root, "qa.jsonl");
  await writeFile(file, jsonl([{ question: "Hi?", answer: "Hello" }]));
  const r = await run([...flags(file, join(root, "qa-out")), "--splits", "train"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /error \[CONFIG_INVALID\]: cannot tell the dataset format from its columns \(question, answer\)/);
});

test("flag errors: --show without a count, an unknown train flag; --help", async () => {
  const noCount = await run([...flags(join(root, "chat"), join(root, "x")), "--show"]);
  assert.equal(noCount.code, 1);
  assert.match(noCount.stderr, /--show expects how many examples to print/);
  const unknown = await run([...flags(join(root, "chat"), join(root, "x")), "--lora_rank", "8"]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /unknown flag --lora_rank: did you mean --lora_r\?/);
  const help = await run(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: tuna data/);
  assert.match(help.stdout, /--assistant_only_loss/);
});
