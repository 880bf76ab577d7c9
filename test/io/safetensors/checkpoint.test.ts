// Tests of model-folder weights: the sharded writer and its index, openWeights over a single file,
// an index or an explicit file, and every inconsistency between an index and its shards.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { openWeights, openWeightsFile, writeShardedSafetensors } from "../../../src/io/safetensors/checkpoint.ts";
import { writeSafetensors, type TensorToWrite } from "../../../src/io/safetensors/writer.ts";
import { patternBytes, rejectsWith, withTmpDir } from "./fixtures.ts";

const u8 = (name: string, length: number, seed: number): TensorToWrite => ({
  name,
  dtype: "U8",
  shape: [length],
  data: patternBytes(length, seed),
});

const SHARD = (i: number, n: number): string => `model-0000${i}-of-0000${n}.safetensors`;

void test("shards in input order, writes the index, and openWeights reads it back", async () => {
  await withTmpDir(async (dir) => {
    // Sizes 40, 40, 40, 100, 8 with a 100-byte limit: [t0 t1] (80; +40 passes 100), [t2] (+100 passes),
    // [t3] (100; +8 passes), [t4].
    const tensors = [u8("t0", 40, 1), u8("t1", 40, 2), u8("t2", 40, 3), u8("t3", 100, 4), u8("t4", 8, 5)];
    const written = await writeShardedSafetensors(dir, tensors, { maxShardBytes: 100, metadata: { note: "x" } });
    const shards = [1, 2, 3, 4].map((i) => SHARD(i, 4));
    assert.deepEqual(written, [...shards.map((s) => join(dir, s)), join(dir, "model.safetensors.index.json")]);
    assert.deepEqual((await readdir(dir)).sort(), [...shards, "model.safetensors.index.json"].sort());
    const index: unknown = JSON.parse(await readFile(join(dir, "model.safetensors.index.json"), "utf8"));
    assert.deepEqual(index, {
      metadata: { total_size: 228 },
      weight_map: { t0: shards[0], t1: shards[0], t2: shards[1], t3: shards[2], t4: shards[3] },
    });

    const weights = await openWeights(dir);
    assert.equal(weights.dir, dir);
    assert.deepEqual(weights.files, shards.map((s) => join(dir, s)));
    assert.deepEqual(weights.names(), ["t0", "t1", "t2", "t3", "t4"]);
    assert.equal(weights.has("t3"), true);
    assert.equal(weights.has("nope"), false);
    assert.equal(weights.info("t2").file, join(dir, shards[1]!));
    assert.equal(weights.info("t2").byteLength, 40);
    for (const t of tensors) assert.deepEqual(await weights.readTensor(t.name), t.data);
    assert.throws(() => weights.info("nope"), (e: Error) => e.message.includes(`"nope"`) && e.message.includes(dir));
    await weights.close();

    const firstShard = await openWeightsFile(join(dir, shards[0]!));
    assert.deepEqual(firstShard.names(), ["t0", "t1"]);
    await firstShard.close();
  });
});

void test("one shard is model.safetensors, and a new save removes the files of an older one", async () => {
  await withTmpDir(async (dir) => {
    await writeShardedSafetensors(dir, [u8("a", 10, 1), u8("b", 10, 2)], { maxShardBytes: 10 });
    assert.equal((await readdir(dir)).length, 3);
    await writeFile(join(dir, "config.json"), "{}");
    const written = await writeShardedSafetensors(dir, [u8("a", 10, 1), u8("b", 10, 2)]);
    assert.deepEqual(written, [join(dir, "model.safetensors")]);
    assert.deepEqual((await readdir(dir)).sort(), ["config.json", "model.safetensors"]);
    const weights = await openWeights(dir);
    assert.deepEqual(weights.files, [join(dir, "model.safetensors")]);
    assert.deepEqual(await weights.readTensor("b"), patternBytes(10, 2));
    await weights.close();
  });
});

void test("a tensor larger than the limit gets a shard of its own", async () => {
  await withTmpDir(async (dir) => {
    await writeShardedSafetensors(dir, [u8("a", 5, 1), u8("huge", 50, 2), u8("c", 5, 3)], { maxShardBytes: 10 });
    const index = JSON.parse(await readFile(join(dir, "model.safetensors.index.json"), "utf8")) as { weight_map: unknown };
    assert.deepEqual(index.weight_map, { a: SHARD(1, 3), huge: SHARD(2, 3), c: SHARD(3, 3) });
  });
});

void test("a bad tensor writes nothing", async () => {
  await withTmpDir(async (dir) => {
    const out = join(dir, "out");
    const bad: TensorToWrite = { name: "b", dtype: "F32", shape: [2], data: new Uint8Array(4) };
    await rejectsWith(writeShardedSafetensors(out, [u8("a", 4, 1), bad], { maxShardBytes: 4 }), "INTERNAL", `"b"`);
    await rejectsWith(writeShardedSafetensors(out, [u8("a", 4, 1), u8("a", 4, 2)], { maxShardBytes: 4 }), "INTERNAL", "twice");
    assert.deepEqual(await readdir(dir), []);
  });
});

/** Writes two shards by hand plus an index with the given weight_map text. */
async function handShards(dir: string, weightMapJson: string): Promise<void> {
  await writeSafetensors(join(dir, "s1.safetensors"), [u8("a", 2, 1), u8("b", 2, 2)]);
  await writeSafetensors(join(dir, "s2.safetensors"), [u8("c", 2, 3)]);
  await writeFile(join(dir, "model.safetensors.index.json"), `{"metadata":{"total_size":6},"weight_map":${weightMapJson}}`);
}

void test("an index naming a missing shard is FILE_NOT_FOUND", async () => {
  await withTmpDir(async (dir) => {
    await handShards(dir, `{"a":"s1.safetensors","b":"s1.safetensors","c":"s3.safetensors"}`);
    await rejectsWith(openWeights(dir), "FILE_NOT_FOUND", "s3.safetensors", `"c"`, "download");
  });
});

void test("index and shards that disagree are FILE_FORMAT errors", async () => {
  await withTmpDir(async (dir) => {
    // "c" is mapped to s1, which does not hold it.
    await handShards(dir, `{"a":"s1.safetensors","b":"s1.safetensors","c":"s1.safetensors"}`);
    await rejectsWith(openWeights(dir), "FILE_FORMAT", `"c"`, "s1.safetensors", "does not contain");
    // The same tensor mapped twice (JSON.parse alone would keep the last).
    await handShards(dir, `{"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors","a":"s1.safetensors"}`);
    await rejectsWith(openWeights(dir), "FILE_FORMAT", `"a" appears twice`);
    // The same tensor stored in two shards.
    await writeSafetensors(join(dir, "s2.safetensors"), [u8("c", 2, 3), u8("a", 2, 4)]);
    await writeFile(join(dir, "model.safetensors.index.json"), `{"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors"}}`);
    await rejectsWith(openWeights(dir), "FILE_FORMAT", `"a"`, "s1.safetensors", "s2.safetensors");
    await writeFile(join(dir, "model.safetensors.index.json"), `{"weight_map":[]}`);
    await rejectsWith(openWeights(dir), "FILE_FORMAT", "weight_map");
    await writeFile(join(dir, "model.safetensors.index.json"), `{"weight_map":`);
    await rejectsWith(openWeights(dir), "FILE_FORMAT", "not valid JSON");
  });
});

void test("an index whose weight_map points outside the model folder is refused, even at a real safetensors file", async () => {
  await withTmpDir(async (dir) => {
    const model = join(dir, "model");
    await mkdir(model);
    // A valid shard that the model does not own, one folder up.
    await writeSafetensors(join(dir, "outside.safetensors"), [u8("c", 2, 3)]);
    await handShards(model, `{"a":"s1.safetensors","b":"s1.safetensors","c":"../outside.safetensors"}`);
    await rejectsWith(openWeights(model), "FILE_FORMAT", `"c"`, "../outside.safetensors", "not a file name in the model folder");
    await handShards(model, `{"a":"s1.safetensors","b":"s1.safetensors","c":${JSON.stringify(join(dir, "outside.safetensors"))}}`);
    await rejectsWith(openWeights(model), "FILE_FORMAT", `"c"`, "not a file name in the model folder");
    await handShards(model, `{"a":"s1.safetensors","b":"sub/../s1.safetensors","c":"s2.safetensors"}`);
    await openWeights(model); // a path that stays inside is fine
  });
});

void test("a corrupt shard is reported with its own path", async () => {
  await withTmpDir(async (dir) => {
    await handShards(dir, `{"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors"}`);
    await writeFile(join(dir, "s2.safetensors"), "short");
    await rejectsWith(openWeights(dir), "FILE_FORMAT", join(dir, "s2.safetensors"));
  });
});

void test("folders without model weights, and explicit files", async () => {
  await withTmpDir(async (dir) => {
    await rejectsWith(openWeights(join(dir, "absent")), "FILE_NOT_FOUND", join(dir, "absent"));
    const adapter = join(dir, "adapter");
    await mkdir(adapter);
    await rejectsWith(openWeights(adapter), "MODEL_INVALID", "no safetensors weights");
    await writeFile(join(adapter, "pytorch_model.bin"), "");
    await rejectsWith(openWeights(adapter), "MODEL_INVALID", "pytorch_model.bin");
    await rm(join(adapter, "pytorch_model.bin"));
    const file = join(adapter, "adapter_model.safetensors");
    await writeSafetensors(file, [u8("lora_A", 3, 1)]);
    await rejectsWith(openWeights(adapter), "MODEL_INVALID", "adapter_model.safetensors");
    for (const weights of [await openWeights(file), await openWeightsFile(file)]) {
      assert.equal(weights.dir, adapter);
      assert.deepEqual(weights.files, [file]);
      assert.deepEqual(weights.names(), ["lora_A"]);
      assert.equal(weights.info("lora_A").file, file);
      assert.deepEqual(await weights.readTensor("lora_A"), patternBytes(3, 1));
      await rejectsWith(weights.readTensor("lora_B"), "MODEL_INVALID", `"lora_B"`, adapter);
      await weights.close();
    }
  });
});
