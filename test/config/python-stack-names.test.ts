// Every argument name of the Python stack's classes — transformers' TrainingArguments, TRL's SFTConfig and DPOConfig,
// and TRL's scripts' ModelConfig / ScriptArguments — read from the classes themselves (test/golden/hf-text/
// python-names.json, tools/golden/make_python_names.py with transformers 5.17, trl 1.13) is known to tuna: a field
// or an alias of one, or ignored / refused with a reason. None falls through to "unknown flag".
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { lookupKey, pythonName } from "../../src/config/names.ts";
import { parseTrainArgs } from "../../src/config/index.ts";

const golden = JSON.parse(readFileSync(new URL("../golden/hf-text/python-names.json", import.meta.url), "utf8")) as { versions: Record<string, string>; classes: Record<string, string[]> };

test(`every name of TrainingArguments, SFTConfig, DPOConfig, ModelConfig and ScriptArguments (transformers ${golden.versions["transformers"]}, trl ${golden.versions["trl"]}) is known`, () => {
  assert.deepEqual(Object.keys(golden.classes), ["TrainingArguments", "SFTConfig", "DPOConfig", "ModelConfig", "ScriptArguments"]);
  for (const [cls, names] of Object.entries(golden.classes)) {
    const unknown = names.filter((n) => lookupKey(n) === undefined && pythonName(n) === undefined);
    assert.deepEqual(unknown, [], `${cls}: names tuna does not know`);
  }
});

test("TRL's script flags set tuna's fields: --use_peft, --load_in_4bit, --load_in_8bit, --use_bnb_nested_quant, --bnb_4bit_quant_storage", async () => {
  const { config } = await parseTrainArgs(["--model_name_or_path", "m", "--use_peft", "--load_in_4bit", "--use_bnb_nested_quant", "--bnb_4bit_quant_storage", "bfloat16"]);
  assert.equal(config.use_peft_lora, true);
  assert.equal(config.use_4bit_quantization, true);
  assert.equal(config.use_nested_quant, true);
  assert.equal(config.bnb_4bit_quant_storage_dtype, "bfloat16");
  const eight = await parseTrainArgs(["--model_name_or_path", "m", "--use_peft", "--load_in_8bit", "--model_revision", "v1.0"]);
  assert.equal(eight.config.use_8bit_quantization, true);
  assert.equal(eight.config.model_revision, "v1.0");
});
