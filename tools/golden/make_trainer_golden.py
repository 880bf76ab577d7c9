"""tuna train against TRL's SFTTrainer itself, step by step, on the CPU (float32): the machine's local wheels of
torch 2.13, transformers 5.17, peft 0.21 and trl 1.13 (tools/golden/README.md says how to install them).

For each case (prompt/completion, conversational through the model's chat template, plain text, packed):
  1. tuna itself writes its initial LoRA adapter (`tuna train ... --learning_rate 0 --max_steps 1`: AdamW with a
     zero learning rate leaves the weights as initialised), so both sides start from the same weights;
  2. PEFT loads that adapter as trainable and TRL's SFTTrainer trains it with the same settings (batch 2, gradient
     accumulation 2, cosine schedule with warmup, weight decay, clipping, 8 steps, no dropout);
  3. the log history (loss, grad_norm, learning_rate per step), the batches' token ids and the final adapter are
     written to test/golden/trainer/, which test/train/trainer-golden.test.ts compares tuna train against.
The data order is the Trainer's own (tuna orders batches as accelerate's seeded sampler does).
Usage: python tools/golden/make_trainer_golden.py (from the repository root, after npm run build)."""
import json
import os
import random
import shutil
import tempfile

import peft
import torch
import transformers
import trl
from datasets import Dataset
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from tuna_runs import lora_tensors, phrase, tuna_initial_adapter

ROOT = os.getcwd()
MODEL = os.path.join(ROOT, "examples", "tiny-llama")
OUT = os.path.join(ROOT, "test", "golden", "trainer")

# The settings of both sides: tuna flags and the SFTConfig fields they mean.
STEPS = 8
SETTINGS = {
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 2,
    "learning_rate": 3e-3,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.25,
    "weight_decay": 0.01,
    "max_grad_norm": 0.5,
    "seed": 42,
}
LORA = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0, "lora_target_modules": "all-linear"}
# The cases: the dataset, tuna's flags beyond the shared ones, and the SFTConfig fields they mean. TRL's tokenizer
# call adds the tokenizer's BOS to text and prompts: tuna's --add_special_tokens true (the peft example's default,
# which tuna keeps, is false). A chat template adds no special tokens in either.
CASES = {
    "prompt-completion": {"data": "prompt-completion", "tuna": ["--add_special_tokens", "true"], "trl": {}},
    "conversational": {"data": "conversational", "tuna": [], "trl": {}},
    "text": {"data": "text", "tuna": ["--add_special_tokens", "true"], "trl": {}},
    "packed": {"data": "prompt-completion", "tuna": ["--add_special_tokens", "true", "--packing", "true"], "trl": {"packing": True}},
    # Assistant-only loss over multi-turn conversations, through TRL's own training template for Qwen2.5 (its
    # {% generation %} blocks mark the assistant turns; trl/chat_templates, Apache-2.0, copied unchanged).
    # (max_length 192: the template's default system prompt is long in this vocabulary.)
    "assistant-only": {"data": "multi-turn", "max_length": 192, "tuna": ["--assistant_only_loss", "true", "--chat_template_file", "{golden}/qwen2_5_training.jinja"],
                       "trl": {"assistant_only_loss": True, "chat_template_path": os.path.join(OUT, "qwen2_5_training.jinja")}},
    # Prompt and completion both trained.
    "whole-sequence": {"data": "prompt-completion", "tuna": ["--add_special_tokens", "true", "--completion_only_loss", "false"],
                       "trl": {"completion_only_loss": False}},
    # The Trainer's LengthGroupedSampler (torch's global generator; nothing else draws from it without dropout).
    "group-by-length": {"data": "text", "tuna": ["--add_special_tokens", "true", "--train_sampling_strategy", "group_by_length"],
                        "trl": {"train_sampling_strategy": "group_by_length"}},
    # SFTConfig's eos_token: another token of the vocabulary ends each text.
    "eos-token": {"data": "text", "tuna": ["--add_special_tokens", "true", "--eos_token", "<unk>"], "trl": {"eos_token": "<unk>"}},
}


def rows(kind: str, n: int) -> list[dict]:
    rng = random.Random(20261208 + len(kind))
    if kind == "prompt-completion":
        return [{"prompt": f"Q: {phrase(rng, 2, 9)}?", "completion": f" A: {phrase(rng, 1, 12)}."} for _ in range(n)]
    if kind == "conversational":
        return [{"messages": [{"role": "user", "content": phrase(rng, 2, 8)}, {"role": "assistant", "content": phrase(rng, 1, 10)}]} for _ in range(n)]
    if kind == "multi-turn":
        turns = lambda: [{"role": "user", "content": phrase(rng, 2, 6)}, {"role": "assistant", "content": phrase(rng, 1, 6)}]
        return [{"messages": [*turns(), *turns()]} for _ in range(n)]
    return [{"text": phrase(rng, 3, 20)} for _ in range(n)]


def shared_flags() -> list[str]:
    """tuna's flags of every case, without the model, dataset and output folder."""
    flags = ["--splits", "train", "--use_peft_lora", "--max_steps", str(STEPS), "--logging_steps", "1",
             "--save_strategy", "no", "--report_to", "jsonl", "--device", "cpu"]
    for k, v in {**LORA, **SETTINGS}.items():
        flags += [f"--{k}", str(v)]
    return flags


golden = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__, "trl": trl.__version__},
          "steps": STEPS, "flags": shared_flags(), "cases": {}}
os.makedirs(OUT, exist_ok=True)
for name, case in CASES.items():
    kind = case["data"]
    max_length = case.get("max_length", 64)
    case = {**case, "tuna": ["--max_seq_length", str(max_length), *case["tuna"]]}
    data = rows(kind, 26)
    data_path = os.path.join(OUT, f"{kind}.jsonl")
    with open(data_path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in data)
    work = tempfile.mkdtemp()
    # 1. tuna's initial adapter.
    init_dir = os.path.join(work, "init")
    # "{golden}" in a flag is this folder (the test puts its own path there).
    tuna_case_flags = [f.replace("{golden}", OUT) for f in case["tuna"]]
    init_file = tuna_initial_adapter(ROOT, "train", ["--model_name_or_path", MODEL, "--dataset_name", data_path, *shared_flags(), *tuna_case_flags], init_dir)
    # 2. TRL trains it.
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    base = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, init_dir, is_trainable=True)
    seen = []

    args = SFTConfig(output_dir=os.path.join(work, "trl"), max_steps=STEPS, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                     max_length=max_length, bf16=False, dataloader_num_workers=0, **{"packing": False, **case["trl"]}, **SETTINGS)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tokenizer)
    collate = trainer.data_collator

    def recording(examples):
        batch = collate(examples)
        seen.append({k: batch[k].tolist() for k in ("input_ids", "labels", "position_ids") if k in batch})
        return batch

    trainer.data_collator = recording
    trainer.train()
    logs = [{k: e[k] for k in ("step", "loss", "grad_norm", "learning_rate") if k in e} for e in trainer.state.log_history if "loss" in e]
    save_file(lora_tensors(model), os.path.join(OUT, f"{name}.final.safetensors"))
    # The initial adapter depends on the seed and the model only: one file for every case.
    init = os.path.join(OUT, "init.safetensors")
    with open(init_file, "rb") as f:
        init_bytes = f.read()
    if os.path.exists(init) and name != next(iter(CASES)):
        with open(init, "rb") as f:
            assert f.read() == init_bytes, f"{name}: tuna's initial adapter differs from the first case's"
    with open(init, "wb") as f:
        f.write(init_bytes)
    golden["cases"][name] = {"data": f"{kind}.jsonl", "flags": case["tuna"], "trl": case["trl"], "logs": logs, "batches": seen}
    shutil.rmtree(work)
    print(name, [round(l["loss"], 6) for l in logs])

with open(os.path.join(OUT, "golden.json"), "w", encoding="utf-8") as f:
    json.dump(golden, f)
print(f"wrote {OUT}/golden.json")
