// Models and adapters that do not fit together or hold NaN/inf: every command that reads them (train,
// eval, generate, merge) names the tensor; a config whose layer count disagrees with the weights is refused.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openSafetensors } from "../../src/io/safetensors/reader.ts";
import { firstNonFinite } from "../../src/io/safetensors/finite.ts";
import { rewriteSafetensors } from "../io/safetensors/fixtures.ts";
import { GOLDEN } from "./causal-lm/golden-harness.ts";
import { runCli } from "../cli/run-cli.ts";
import { openModelForUse } from "../../src/train/open-model.ts";
import { createCpuBackend } from "../../src/backend/cpu/index.ts";

const BASE = join(GOLDEN, "llama/model");
const ADAPTER = join(GOLDEN, "llama/adapter");
const TINY = new URL("../../examples/tiny-llama", import.meta.url).pathname;
const DATA = new URL("../fixtures/chat-small.jsonl", import.meta.url).pathname;
let root = "";

before(async () => {
  root = await mkdtemp(join(tmpdir(), "tuna-bad-weights-"));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Rewrites `file` with element `index` of tensor `name` set to `value` (f32, or bf16 by truncation). */
async function poison(file: string, name: string, index: number, value: number): Promise<void> {
  let found = false;
  await rewriteSafetensors(file, (tensorName, data, dtype) => {
    if (tensorName !== name) return undefined;
    found = true;
    const view = new DataView(data.buffer);
    if (dtype === "F32") view.setFloat32(index * 4, value, true);
    else if (dtype === "BF16") view.setUint16(index * 2, new Uint32Array(Float32Array.from([value]).buffer)[0]! >>> 16, true);
    else assert.fail(`cannot poison a ${dtype} tensor`);
    return data;
  });
  assert.ok(found, `no tensor ${name} in ${file}`);
}

async function copy(from: string, name: string): Promise<string> {
  const dir = join(root, name);
  await cp(from, dir, { recursive: true });
  return dir;
}

void test("firstNonFinite finds NaN and ±inf in F32, F64, BF16 and F16 bytes, at any position", () => {
  const f32 = new Float32Array(10_001).fill(1.5);
  assert.equal(firstNonFinite(new Uint8Array(f32.buffer), "F32"), -1);
  f32[9_999] = -Infinity;
  assert.equal(firstNonFinite(new Uint8Array(f32.buffer), "F32"), 9_999);
  const f64 = new Float64Array([1, Number.MAX_VALUE, NaN]);
  assert.equal(firstNonFinite(new Uint8Array(f64.buffer), "F64"), 2);
  // bf16: 0x7f7f is the largest finite value, 0x7f80 +inf, 0xffc1 a NaN; odd lengths and odd positions.
  for (const [bits, expected] of [[[0x3f80, 0x7f7f, 0xff7f], -1], [[0x3f80, 0x3f80, 0x7f80], 2], [[0xffc1], 0], [[0x3f80, 0xffc1, 0x3f80, 0x3f80], 1]] as const) {
    assert.equal(firstNonFinite(new Uint8Array(Uint16Array.from(bits).buffer), "BF16"), expected, JSON.stringify(bits));
  }
  // f16: 0x7bff is 65504 (finite), 0x7c00 +inf, 0xfe00 NaN.
  assert.equal(firstNonFinite(new Uint8Array(Uint16Array.from([0x7bff, 0xfbff]).buffer), "F16"), -1);
  assert.equal(firstNonFinite(new Uint8Array(Uint16Array.from([0x7bff, 0xfe00]).buffer), "F16"), 1);
  // Integer tensors are not checked.
  assert.equal(firstNonFinite(Uint8Array.from([0xff, 0xff, 0xff, 0xff]), "U8"), -1);
});

void test("NaN in base weights is named by train, eval-style generate and merge; inf in an adapter likewise", async () => {
  const model = await copy(BASE, "nan-model");
  await poison(join(model, "model.safetensors"), "model.layers.1.mlp.down_proj.weight", 7, NaN);
  const expectBase = (r: { code: number; err: string }, what: string): void => {
    assert.equal(r.code, 1, `${what}: ${r.err}`);
    assert.match(r.err, /error \[MODEL_INVALID\]: .*model\.safetensors: tensor "model\.layers\.1\.mlp\.down_proj\.weight" holds NaN at element 7/, what);
  };
  expectBase(await runCli(["generate", model, "--prompt", "hi", "--max_new_tokens", "2"]), "generate");
  expectBase(await runCli(["merge", model, "--adapter", ADAPTER, "--output_dir", join(root, "merged-nan")]), "merge");
  // tiny-llama has a tokenizer, so train gets as far as the weights (bf16 there).
  const tiny = await copy(TINY, "nan-tiny");
  await poison(join(tiny, "model.safetensors"), "model.layers.0.self_attn.q_proj.weight", 3, -Infinity);
  const trained = await runCli(["train", "--model_name_or_path", tiny, "--dataset_name", DATA, "--splits", "train", "--max_steps", "1", "--use_peft_lora", "--chat_template_format", "chatml", "--output_dir", join(root, "train-nan")]);
  assert.equal(trained.code, 1, trained.err);
  assert.match(trained.err, /tensor "model\.layers\.0\.self_attn\.q_proj\.weight" holds -inf at element 3/);

  const adapter = await copy(ADAPTER, "inf-adapter");
  const adapterFile = join(adapter, "adapter_model.safetensors");
  const opened = await openSafetensors(adapterFile);
  const names = [...opened.tensors.keys()];
  await opened.close();
  const target = names.find((n) => n.includes("lora_B"))!;
  await poison(adapterFile, target, 0, Infinity);
  const r = await runCli(["merge", BASE, "--adapter", adapter, "--output_dir", join(root, "merged-inf")]);
  assert.equal(r.code, 1);
  assert.match(r.err, new RegExp(`tensor "${target.replace(/\./g, "\\.")}" holds \\+inf at element 0`));
});

void test("a config with fewer layers than the weights hold is refused, naming both", async () => {
  const model = await copy(BASE, "extra-layers");
  const config = JSON.parse(await readFile(join(model, "config.json"), "utf8")) as Record<string, unknown>;
  config["num_hidden_layers"] = 1;
  await writeFile(join(model, "config.json"), JSON.stringify(config));
  const r = await runCli(["inspect", model]);
  assert.equal(r.code, 1);
  assert.match(r.err, /num_hidden_layers 1, but the weights also hold layer\(s\) 1 \(e\.g\. model\.layers\.1\./);
});

void test("an adapter whose base_model_name_or_path names another model is warned about, by merge and by generate/eval/chat's loader", async () => {
  const adapter = await copy(ADAPTER, "other-base-adapter");
  const configPath = join(adapter, "adapter_config.json");
  const config = JSON.parse(await readFile(configPath, "utf8")) as Record<string, unknown>;
  config["base_model_name_or_path"] = "meta-llama/Llama-2-7b-hf";
  await writeFile(configPath, JSON.stringify(config));
  const merged = await runCli(["merge", BASE, "--adapter", adapter, "--output_dir", join(root, "merged-other")]);
  assert.equal(merged.code, 0, merged.err);
  assert.match(merged.err, /warning: the adapter .* was trained on "meta-llama\/Llama-2-7b-hf" \(base_model_name_or_path\), but it is applied to /);
  // generate, eval and chat open the model through openModelForUse.
  const notices: string[] = [];
  await openModelForUse(createCpuBackend({ threads: 1 }), BASE, { adapterDir: adapter, baseDtype: "f32", onNotice: (m) => notices.push(m) });
  assert.equal(notices.length, 1);
  assert.match(notices[0]!, /warning: the adapter .* was trained on "meta-llama\/Llama-2-7b-hf"/);
  // The model's own path, and a folder of the same name elsewhere (a copy), are no mismatch.
  for (const base of [BASE, "/elsewhere/llama/model"]) {
    config["base_model_name_or_path"] = base;
    await writeFile(configPath, JSON.stringify(config));
    const ok = await runCli(["merge", BASE, "--adapter", adapter, "--output_dir", join(root, `merged-ok-${base.length}`)]);
    assert.equal(ok.code, 0, ok.err);
    assert.doesNotMatch(ok.err, /warning: the adapter/);
  }
});
