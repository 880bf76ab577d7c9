import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { ropeInvFreq } from "../../../src/model/causal-lm/rope-freqs.ts";
import { parseModelConfig } from "../../../src/hf/config.ts";
import { openWeightsFile } from "../../../src/io/safetensors/checkpoint.ts";
import { decodeToFloat32 } from "../../../src/io/safetensors/convert.ts";

const golden = new URL("../../golden/", import.meta.url).pathname;

test("inverse frequencies equal transformers' (default theta 10000/1e6/5e5 and llama3 scaling), bit for bit", async () => {
  for (const family of ["llama", "llama3", "mistral", "qwen2"]) {
    const cfg = parseModelConfig(JSON.parse(await readFile(`${golden}${family}/model/config.json`, "utf8")), family);
    const dump = await openWeightsFile(`${golden}${family}/a.safetensors`);
    const expected = decodeToFloat32(await dump.readTensor("rope.inv_freq"), "F32");
    await dump.close();
    assert.deepEqual(Array.from(ropeInvFreq(cfg)), Array.from(expected), family);
  }
});
