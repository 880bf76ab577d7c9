"""The argument names of the Python stack, from the classes themselves (the CPU machine's local wheels: transformers
5.17, trl 1.13, peft 0.21): TrainingArguments, TRL's SFTConfig and DPOConfig, and the ModelConfig / ScriptArguments
of TRL's scripts (trl/scripts/sft.py, dpo.py). Writes test/golden/hf-text/python-names.json; test/config/names.test.ts
checks that tuna knows every one (a field, an alias, or ignored / refused with a reason).
Usage: python tools/golden/make_python_names.py (from the repository root)."""
import dataclasses
import json
import os

import peft
import transformers
import trl
from transformers import TrainingArguments
from trl import DPOConfig, ModelConfig, ScriptArguments, SFTConfig

names = {"versions": {"transformers": transformers.__version__, "trl": trl.__version__, "peft": peft.__version__}, "classes": {}}
for cls in (TrainingArguments, SFTConfig, DPOConfig, ModelConfig, ScriptArguments):
    names["classes"][cls.__name__] = sorted(f.name for f in dataclasses.fields(cls) if not f.name.startswith("_"))
path = os.path.join(os.getcwd(), "test", "golden", "hf-text", "python-names.json")
with open(path, "w", encoding="utf-8") as f:
    json.dump(names, f, indent=1)
print("wrote", path, {k: len(v) for k, v in names["classes"].items()})
