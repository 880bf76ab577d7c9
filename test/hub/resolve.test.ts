// resolveModelPath / resolveDatasetPath against a loopback fake hub: cache layout, offline mode, cache
// fallback, errors (404, 401, 403, unreachable), shards, tokens and local paths.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { lstat, mkdtemp, readFile, readdir, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative, resolve as resolvePath } from "node:path";
import { resolveDatasetPath, resolveModelPath } from "../../src/hub/resolve.ts";
import { TunaError } from "../../src/util/errors.ts";
import { deadEndpoint, gitBlobId, sha256, startFakeHub } from "./fake-hub.ts";
import type { FakeHub, FakeRepo } from "./fake-hub.ts";

const commit = (seed: string): string => createHash("sha1").update(seed).digest("hex");

const TINY: FakeRepo = {
  kind: "model",
  id: "org/tiny",
  commit: commit("tiny"),
  refs: ["v1"],
  files: {
    "config.json": '{"model_type":"llama"}',
    "generation_config.json": '{"eos_token_id":2}',
    "tokenizer.json": '{"model":{"type":"BPE","vocab":{},"merges":[]}}',
    "tokenizer_config.json": '{"bos_token":"<s>"}',
    "README.md": "# tiny",
    "model.safetensors": "weights of tiny",
    "pytorch_model.bin": "pickle of tiny",
  },
  lfs: ["model.safetensors", "pytorch_model.bin"],
};

const SHARDED: FakeRepo = {
  kind: "model",
  id: "org/sharded",
  commit: commit("sharded"),
  files: {
    "config.json": "{}",
    "model.safetensors.index.json": JSON.stringify({
      metadata: { total_size: 2 },
      weight_map: {
        "a.weight": "model-00001-of-00002.safetensors",
        "b.weight": "model-00002-of-00002.safetensors",
        "c.weight": "model-00001-of-00002.safetensors",
      },
    }),
    "model-00001-of-00002.safetensors": "shard one",
    "model-00002-of-00002.safetensors": "shard two",
    "unlisted.safetensors": "not in the index",
  },
  lfs: ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "unlisted.safetensors"],
};

const REPOS: FakeRepo[] = [
  TINY,
  SHARDED,
  { kind: "model", id: "org/binonly", commit: commit("bin"), files: { "config.json": "{}", "pytorch_model.bin": "x" } },
  { kind: "model", id: "org/private", commit: commit("p"), files: {}, status: 401 },
  { kind: "model", id: "org/gated", commit: commit("g"), files: {}, status: 403 },
  {
    kind: "model",
    id: "org/broken",
    commit: commit("broken"),
    files: { "config.json": "{}", "model.safetensors": "never arrives" },
    brokenFiles: ["model.safetensors"],
  },
  {
    kind: "dataset",
    id: "org/ds",
    commit: commit("ds"),
    files: {
      "README.md": "# ds",
      "data/train-00000-of-00001.parquet": "PAR1 train",
      "data/test-00000-of-00001.parquet": "PAR1 test",
      "raw/train.csv": "a,b",
    },
    lfs: ["data/train-00000-of-00001.parquet"],
  },
  // Hostile answers: ETags and listing entries that name paths outside the cache.
  {
    kind: "model",
    id: "evil/etag",
    commit: commit("evil-etag"),
    files: { "config.json": "{}", "model.safetensors": "weights" },
    etags: { "config.json": '"../../../../escaped"' },
  },
  {
    kind: "model",
    id: "evil/weak-etag",
    commit: commit("evil-lfs-etag"),
    files: { "config.json": "{}", "model.safetensors": "weights" },
    etags: { "model.safetensors": 'W/"..%2F..%2Fescaped"' },
  },
  {
    kind: "dataset",
    id: "evil/listing",
    commit: commit("evil-listing"),
    files: { "data/train.parquet": "PAR1", "../../../../../escaped.parquet": "PAR1 outside" },
  },
  {
    kind: "model",
    id: "evil/listing",
    commit: commit("evil-model-listing"),
    files: { "config.json": "{}", "model.safetensors": "w", "/etc/escaped.json": "{}" },
  },
];

let hub: FakeHub;
const homes: string[] = [];

before(async () => {
  hub = await startFakeHub(REPOS);
});

after(async () => {
  await hub.close();
  for (const home of homes) await rm(home, { recursive: true, force: true });
});

async function tempHome(): Promise<string> {
  const home = await mkdtemp(join(tmpdir(), "tuna-hub-"));
  homes.push(home);
  return home;
}

function envFor(home: string, endpoint: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { HF_HOME: home, HF_ENDPOINT: endpoint, ...extra };
}

async function rejectsWith(promise: Promise<unknown>, code: string, ...fragments: string[]): Promise<TunaError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof TunaError, `expected TunaError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const f of fragments) assert.ok(e.message.includes(f), `message lacks "${f}": ${e.message}`);
    return e;
  }
  assert.fail(`expected a ${code} error`);
}

void test("download fills the standard HF cache layout and returns the snapshot folder", async () => {
  const home = await tempHome();
  const before = hub.requests.length;
  const folder = await resolveModelPath("org/tiny", { env: envFor(home, hub.url) });
  const storage = join(home, "hub", "models--org--tiny");
  assert.equal(folder, join(storage, "snapshots", TINY.commit));
  assert.equal(await readFile(join(storage, "refs", "main"), "utf8"), TINY.commit);

  const wanted = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"];
  assert.deepEqual((await readdir(folder)).sort(), wanted);
  for (const file of wanted) {
    const content = TINY.files[file]!;
    assert.equal(await readFile(join(folder, file), "utf8"), content);
    // Snapshot entries are relative symlinks to blobs named by etag: git blob id, or sha256 for LFS files.
    const blobName = file === "model.safetensors" ? sha256(content) : gitBlobId(content);
    assert.ok((await lstat(join(folder, file))).isSymbolicLink());
    assert.equal(await readlink(join(folder, file)), join("..", "..", "blobs", blobName));
  }
  assert.equal((await readdir(join(storage, "blobs"))).length, wanted.length);

  const paths = hub.requests.slice(before).map((r) => r.path);
  assert.ok(paths.some((p) => p.startsWith("/api/models/org/tiny/revision/main?")));
  assert.ok(paths.includes(`/org/tiny/resolve/${TINY.commit}/config.json`));
  assert.ok(!paths.some((p) => p.includes("README.md") || p.includes("pytorch_model.bin")));
});

void test("offline after a download returns the same folder without touching the network", async () => {
  const home = await tempHome();
  const server = await startFakeHub([TINY]);
  const online = await resolveModelPath("org/tiny", { env: envFor(home, server.url) });
  await server.close();
  const count = server.requests.length;
  const offline = await resolveModelPath("org/tiny", { env: envFor(home, server.url, { HF_HUB_OFFLINE: "1" }) });
  assert.equal(offline, online);
  assert.equal(server.requests.length, count);
});

void test("an unreachable hub falls back to a complete cached snapshot and says so", async () => {
  const home = await tempHome();
  const first = await resolveModelPath("org/tiny", { env: envFor(home, hub.url) });
  const dead = await deadEndpoint();
  const notices: string[] = [];
  const again = await resolveModelPath("org/tiny", { env: envFor(home, dead), onNotice: (m) => notices.push(m) });
  assert.equal(again, first);
  assert.equal(notices.length, 1);
  assert.ok(notices[0]!.includes(dead) && notices[0]!.includes("cached snapshot"), notices[0]);
});

void test("offline with an empty cache names the id, the cache path and how to fetch it", async () => {
  const home = await tempHome();
  const e = await rejectsWith(
    resolveModelPath("org/tiny", { env: envFor(home, hub.url, { HF_HUB_OFFLINE: "1" }) }),
    "HUB",
    "org/tiny",
    join(home, "hub", "models--org--tiny"),
    "huggingface-cli download org/tiny",
  );
  assert.ok(e.message.includes("HF_HUB_OFFLINE"));
});

void test("HF_HUB_CACHE overrides HF_HOME for the cache location", async () => {
  const home = await tempHome();
  const cache = join(home, "elsewhere");
  const folder = await resolveModelPath("org/tiny", { env: envFor(home, hub.url, { HF_HUB_CACHE: cache }) });
  assert.equal(folder, join(cache, "models--org--tiny", "snapshots", TINY.commit));
});

void test("an unreachable hub and an empty cache give a HUB error naming id, endpoint and cache", async () => {
  const home = await tempHome();
  const dead = await deadEndpoint();
  await rejectsWith(
    resolveModelPath("org/tiny", { env: envFor(home, dead) }),
    "HUB",
    "org/tiny",
    dead,
    join(home, "hub", "models--org--tiny"),
  );
});

void test("a failed weight download leaves no ref and reports the file", async () => {
  const home = await tempHome();
  await rejectsWith(resolveModelPath("org/broken", { env: envFor(home, hub.url) }), "HUB", "model.safetensors", "500");
  assert.ok(!existsSync(join(home, "hub", "models--org--broken", "refs", "main")));
});

void test("404, 401 and 403 are final HUB errors with advice", async () => {
  const home = await tempHome();
  const env = envFor(home, hub.url);
  await rejectsWith(resolveModelPath("org/missing", { env }), "HUB", "no such repo or file", "org/missing");
  await rejectsWith(resolveModelPath("org/tiny", { env, revision: "nope" }), "HUB", "no such repo", "revision nope");
  await rejectsWith(resolveModelPath("org/private", { env }), "HUB", "401", "HF_TOKEN");
  await rejectsWith(resolveModelPath("org/gated", { env }), "HUB", "403", "gated", "org/gated");
});

void test("a sharded index downloads every shard it lists and nothing else", async () => {
  const home = await tempHome();
  const folder = await resolveModelPath("org/sharded", { env: envFor(home, hub.url) });
  assert.deepEqual((await readdir(folder)).sort(), [
    "config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
  ]);
  assert.equal(await readFile(join(folder, "model-00002-of-00002.safetensors"), "utf8"), "shard two");
  // Offline, the index is what says the snapshot is complete.
  const offline = await resolveModelPath("org/sharded", { env: envFor(home, hub.url, { HF_HUB_OFFLINE: "1" }) });
  assert.equal(offline, folder);
  await rm(join(folder, "model-00002-of-00002.safetensors"));
  await rejectsWith(
    resolveModelPath("org/sharded", { env: envFor(home, hub.url, { HF_HUB_OFFLINE: "1" }) }),
    "HUB",
    "model-00002-of-00002.safetensors",
  );
});

void test("a repo with only .bin weights is refused: safetensors only", async () => {
  const home = await tempHome();
  await rejectsWith(resolveModelPath("org/binonly", { env: envFor(home, hub.url) }), "UNSUPPORTED", "safetensors only");
});

void test("HF_TOKEN (or HUGGING_FACE_HUB_TOKEN, or $HF_HOME/token) is sent as a Bearer token", async () => {
  for (const [name, extra] of [
    ["HF_TOKEN", { HF_TOKEN: "hf_test_one" }],
    ["HUGGING_FACE_HUB_TOKEN", { HUGGING_FACE_HUB_TOKEN: "hf_test_two" }],
  ] as const) {
    const home = await tempHome();
    const server = await startFakeHub([TINY]);
    try {
      await resolveModelPath("org/tiny", { env: envFor(home, server.url, extra) });
      const token = Object.values(extra)[0];
      assert.ok(server.requests.length >= 6, name);
      for (const r of server.requests) assert.equal(r.authorization, `Bearer ${token}`, `${name}: ${r.path}`);
    } finally {
      await server.close();
    }
  }
  const home = await tempHome();
  await writeFile(join(home, "token"), "hf_from_file\n");
  const server = await startFakeHub([TINY]);
  try {
    await resolveModelPath("org/tiny", { env: envFor(home, server.url) });
    assert.equal(server.requests[0]!.authorization, "Bearer hf_from_file");
  } finally {
    await server.close();
  }
  await rejectsWith(
    resolveModelPath("org/tiny", { env: envFor(await tempHome(), hub.url, { HF_TOKEN: "not-a-token" }) }),
    "CONFIG_INVALID",
    "HF_TOKEN",
  );
});

void test("a custom fetch carries every request", async () => {
  const home = await tempHome();
  const seen: string[] = [];
  const countingFetch: typeof fetch = (input, init) => {
    seen.push(input instanceof Request ? input.url : String(input));
    return fetch(input, init);
  };
  const before = hub.requests.length;
  await resolveModelPath("org/sharded", { env: envFor(home, hub.url), fetch: countingFetch });
  assert.ok(seen.length >= 5);
  assert.ok(seen.every((u) => u.startsWith(hub.url)));
  // Every API and resolve request the server saw went through it (LFS redirect targets are followed inside).
  const seenPaths = new Set(seen.map((u) => decodeURIComponent(u.slice(hub.url.length))));
  for (const r of hub.requests.slice(before).filter((q) => !q.path.startsWith("/cdn/"))) {
    assert.ok(seenPaths.has(r.path), r.path);
  }
});

void test("a tag revision is recorded in refs/ and a cached commit needs no network", async () => {
  const home = await tempHome();
  const folder = await resolveModelPath("org/tiny", { env: envFor(home, hub.url), revision: "v1" });
  assert.equal(await readFile(join(home, "hub", "models--org--tiny", "refs", "v1"), "utf8"), TINY.commit);
  const dead = await deadEndpoint();
  const notices: string[] = [];
  const byCommit = await resolveModelPath("org/tiny", {
    env: envFor(home, dead),
    revision: TINY.commit,
    onNotice: (m) => notices.push(m),
  });
  assert.equal(byCommit, folder);
  assert.deepEqual(notices, []);
});

void test("explicit files replace the default set", async () => {
  const home = await tempHome();
  const folder = await resolveModelPath("org/tiny", { env: envFor(home, hub.url), files: ["README.md"] });
  assert.deepEqual(await readdir(folder), ["README.md"]);
  await rejectsWith(
    resolveModelPath("org/tiny", { env: envFor(home, hub.url), files: ["absent.json"] }),
    "HUB",
    "absent.json",
  );
});

void test("local folders are returned absolute; missing paths are FILE_NOT_FOUND, bad ids CONFIG_INVALID", async () => {
  const dir = await tempHome();
  const rel = relative(process.cwd(), dir);
  assert.equal(await resolveModelPath(rel), dir);
  assert.equal(await resolveModelPath(dir), dir);
  await rejectsWith(resolveModelPath(join(dir, "nope")), "FILE_NOT_FOUND", join(dir, "nope"));
  await rejectsWith(resolveModelPath("./no-such-model-here"), "FILE_NOT_FOUND", "./no-such-model-here");
  await rejectsWith(resolveModelPath("~/no-such-model-here-xyz"), "FILE_NOT_FOUND", "~/no-such-model-here-xyz");
  // "src" exists in the repo root, so src/<missing> is a mistyped local path rather than a hub id.
  const partial = relative(process.cwd(), resolvePath("src", "no-such-model"));
  await rejectsWith(resolveModelPath(partial), "FILE_NOT_FOUND", partial);
  for (const bad of ["has space", "org/-lead", "a--b/c", "org/x.git", "org/"]) {
    const e = await resolveModelPath(bad, { env: { HF_HUB_OFFLINE: "1" } }).then(
      () => undefined,
      (err: unknown) => err,
    );
    assert.ok(e instanceof TunaError, bad);
    assert.ok(e.code === "CONFIG_INVALID" || e.code === "FILE_NOT_FOUND", `${bad}: ${e.code}`);
    assert.ok(e.message.includes(bad.replace(/\/$/, "")), e.message);
  }
  const file = join(dir, "weights.safetensors");
  await writeFile(file, "x");
  await rejectsWith(resolveModelPath(file), "MODEL_INVALID", "is a file");
  assert.equal(await resolveDatasetPath(file), file);
});

void test("a dataset repo downloads its parquet files and README into datasets--org--name", async () => {
  const home = await tempHome();
  const before = hub.requests.length;
  const folder = await resolveDatasetPath("org/ds", { env: envFor(home, hub.url) });
  const ds = REPOS.find((r) => r.id === "org/ds")!;
  assert.equal(folder, join(home, "hub", "datasets--org--ds", "snapshots", ds.commit));
  assert.deepEqual((await readdir(folder)).sort(), ["README.md", "data"]);
  assert.deepEqual((await readdir(join(folder, "data"))).sort(), [
    "test-00000-of-00001.parquet",
    "train-00000-of-00001.parquet",
  ]);
  assert.equal(await readFile(join(folder, "data", "train-00000-of-00001.parquet"), "utf8"), "PAR1 train");
  const paths = hub.requests.slice(before).map((r) => r.path);
  assert.ok(paths.some((p) => p.startsWith(`/api/datasets/org/ds/tree/${ds.commit}`) && p.includes("cursor=")));
  assert.ok(paths.includes(`/datasets/org/ds/resolve/${ds.commit}/README.md`));
  const offline = await resolveDatasetPath("org/ds", { env: envFor(home, hub.url, { HF_HUB_OFFLINE: "1" }) });
  assert.equal(offline, folder);
  await rejectsWith(
    resolveDatasetPath("org/other", { env: envFor(home, hub.url, { HF_HUB_OFFLINE: "1" }) }),
    "HUB",
    "datasets--org--other",
    "--repo-type dataset",
  );
});

void test("hostile hub answers never name a file outside the cache: ETags and listing entries are refused", async () => {
  const sandbox = await tempHome();
  const home = join(sandbox, "home");
  const env = envFor(home, hub.url);
  await rejectsWith(resolveModelPath("evil/etag", { env }), "HUB", "ETag", "../../../../escaped", "not a content hash");
  await rejectsWith(resolveModelPath("evil/weak-etag", { env }), "HUB", "ETag", "not a content hash");
  await rejectsWith(resolveDatasetPath("evil/listing", { env }), "HUB", "dataset repo \"evil/listing\"", "../../../../../escaped.parquet", "not a relative path");
  await rejectsWith(resolveModelPath("evil/listing", { env }), "HUB", "/etc/escaped.json", "not a relative path");
  // Nothing was written beside the cache, and nothing in it is a link that leaves it.
  assert.deepEqual(await readdir(sandbox), ["home"]);
  assert.ok(!existsSync(join(sandbox, "escaped")) && !existsSync("/etc/escaped.json"));
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const full = join(dir, entry.name);
      if (entry.isDirectory()) await walk(full);
      else if (entry.isSymbolicLink()) {
        const target = resolvePath(dir, await readlink(full));
        assert.ok(!relative(home, target).startsWith(".."), `${full} links outside the cache to ${target}`);
      }
    }
  };
  await walk(home);
});

void test("a revision with '..' segments is refused before it names a ref file", async () => {
  const home = await tempHome();
  await rejectsWith(resolveModelPath("org/tiny", { env: envFor(home, hub.url), revision: "../../../x" }), "HUB", "revision", "not a relative path");
  await rejectsWith(resolveModelPath("org/tiny", { env: envFor(home, hub.url, { HF_HUB_OFFLINE: "1" }), revision: "a/../../b" }), "HUB", "revision");
});
