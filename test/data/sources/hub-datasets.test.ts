// Hub dataset ids against the loopback fake hub: repos of JSON Lines, JSON, CSV, Parquet and Arrow files load
// as the local reader loads them (the files HF datasets would read are fetched), then the same ids work
// from the cache with HF_HUB_OFFLINE=1, through loadDataset and through `tuna data` (fingerprint included).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadDataset } from "../../../src/data/sources/load.ts";
import { startFakeHub, type FakeHub, type FakeRepo } from "../../hub/fake-hub.ts";
import { runCliWithEnv } from "../../cli/run-cli.ts";

const FIXTURES = fileURLToPath(new URL("../fixtures/pyarrow/", import.meta.url));
const TINY = fileURLToPath(new URL("../../../examples/tiny-llama", import.meta.url));
const commit = (n: number): string => String(n).repeat(40).slice(0, 40);
const jsonl = (rows: unknown[]): string => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
const chat = (q: string, a: string): { messages: { role: string; content: string }[] } => ({
  messages: [
    { role: "user", content: q },
    { role: "assistant", content: a },
  ],
});

const REPOS: FakeRepo[] = [
  {
    kind: "dataset",
    id: "org/jsonl",
    commit: commit(1),
    files: { "README.md": "# chat", "train.jsonl": jsonl([chat("Hi", "Hello"), chat("Bye", "Ciao")]), "test.jsonl": jsonl([chat("Thanks", "Welcome")]) },
  },
  { kind: "dataset", id: "org/json", commit: commit(2), files: { "data/train.json": JSON.stringify([{ text: "a" }, { text: "b" }]) } },
  { kind: "dataset", id: "org/csv", commit: commit(3), files: { "train.csv": "text,n\nfirst,1\nsecond,2\n", "notes.txt": "not data" } },
  {
    kind: "dataset",
    id: "org/arrow",
    commit: commit(4),
    files: { "train/data-00000-of-00002.arrow": readFileSync(join(FIXTURES, "hf-dict", "train", "data-00000-of-00002.arrow")) },
    lfs: ["train/data-00000-of-00002.arrow"],
  },
  // The default dataset_name, laid out as on the hub: JSON Lines files whose names carry the split.
  {
    kind: "dataset",
    id: "timdettmers/openassistant-guanaco",
    commit: commit(6),
    files: {
      "README.md": "---\nlicense: apache-2.0\n---\n",
      "openassistant_best_replies_train.jsonl": jsonl([{ text: "### Human: Hi### Assistant: Hello" }, { text: "### Human: Bye### Assistant: Ciao" }]),
      "openassistant_best_replies_eval.jsonl": jsonl([{ text: "### Human: Thanks### Assistant: Welcome" }]),
    },
  },
  { kind: "dataset", id: "org/nothing", commit: commit(5), files: { "README.md": "# empty", "notes.txt": "x" } },
];

let hub: FakeHub;
let home: string;

before(async () => {
  hub = await startFakeHub(REPOS);
  home = await mkdtemp(join(tmpdir(), "tuna-hub-data-"));
});

after(async () => {
  await hub.close();
  await rm(home, { recursive: true, force: true });
});

const online = (): Record<string, string> => ({ HF_HOME: home, HF_ENDPOINT: hub.url });
const offline = (): Record<string, string> => ({ HF_HOME: home, HF_ENDPOINT: hub.url, HF_HUB_OFFLINE: "1" });

/** The repo's files written to a local folder, to load with the local reader for comparison. */
async function localCopy(repo: FakeRepo): Promise<string> {
  const folder = join(home, "local", repo.id);
  for (const [path, content] of Object.entries(repo.files)) {
    await mkdir(dirname(join(folder, path)), { recursive: true });
    await writeFile(join(folder, path), content);
  }
  return folder;
}

void test("hub repos of JSON Lines, JSON, CSV and Arrow files load as the local reader loads them, then from the cache offline", async () => {
  const cases: [string, string[]][] = [
    ["org/jsonl", ["train", "test"]],
    ["org/json", ["train"]],
    ["org/csv", ["train"]],
    ["org/arrow", ["train"]],
  ];
  for (const [id, splits] of cases) {
    const local = await loadDataset(await localCopy(REPOS.find((r) => r.id === id)!), { splits });
    for (const env of [online(), offline()]) {
      const got = await loadDataset(id, { splits, env });
      for (const split of splits) {
        assert.ok(got.get(split)!.rows.length > 0, `${id} ${split}`);
        assert.deepEqual(got.get(split)!.rows, local.get(split)!.rows, `${id} ${split}`);
        assert.match(got.get(split)!.origins[0]!.file, new RegExp(`^hf://datasets/${id}/`));
      }
    }
  }
  const train = await loadDataset("org/jsonl", { splits: ["train"], env: offline() });
  assert.deepEqual(train.get("train")!.rows, [chat("Hi", "Hello"), chat("Bye", "Ciao")]);
});

void test("a hub dataset without data files says what it looked for", async () => {
  await assert.rejects(loadDataset("org/nothing", { splits: ["train"], env: online() }), (e: unknown) => {
    assert.ok(e instanceof Error && /no data files tuna reads \(\*\.jsonl, \*\.json, \*\.csv, \*\.parquet, \*\.arrow\)/.test(e.message), String(e));
    return true;
  });
});

void test("`tuna data` on the default dataset_name (a hub id) works online, then offline from the cache (the fingerprint reads the cached files)", async () => {
  const output = join(home, "out");
  const args = ["data", "--model_name_or_path", TINY, "--output_dir", output, "--max_seq_length", "64", "--json"];
  const first = await runCliWithEnv(args, online());
  assert.equal(first.code, 0, first.err);
  const again = await runCliWithEnv([...args, "--output_dir", join(home, "out2")], offline());
  assert.equal(again.code, 0, again.err);
  type Stats = { splits: Record<string, { rows: number }> };
  const splits = (text: string): Stats["splits"] => (JSON.parse(text) as Stats).splits;
  assert.deepEqual(splits(again.out), splits(first.out));
  assert.equal(splits(first.out)["train"]?.rows, 2);
  assert.equal(splits(first.out)["test"]?.rows, 1);
});
