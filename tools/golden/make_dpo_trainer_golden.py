"""tuna dpo against TRL's DPOTrainer itself, step by step, on the CPU (float32): as make_trainer_golden.py does for
SFT. tuna writes its initial adapter (learning rate 0), PEFT loads it as trainable, TRL 1.13's DPOTrainer trains it
(the reference: the same adapter at its start, which is the base since LoRA's B starts at zero), and the per-step
loss, rewards and log-probabilities, the grad norm and the final adapter go to test/golden/dpo-trainer/.
Usage: python tools/golden/make_dpo_trainer_golden.py (from the repository root, after npm run build)."""
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
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from tuna_runs import lora_tensors, phrase, tuna_initial_adapter

ROOT = os.getcwd()
MODEL = os.path.join(ROOT, "examples", "tiny-llama")
OUT = os.path.join(ROOT, "test", "golden", "dpo-trainer")
STEPS = 6
SETTINGS = {
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 2,
    "learning_rate": 5e-3,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.25,
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
    "seed": 42,
    "beta": 0.1,
    "max_length": 48,
}
LORA = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0, "lora_target_modules": "all-linear"}
CASES = {
    "text": {"data": "text", "tuna": [], "trl": {}},
    "conversational": {"data": "conversational", "tuna": [], "trl": {}},
    "ipo": {"data": "text", "tuna": ["--loss_type", "ipo"], "trl": {"loss_type": ["ipo"]}},
    # Robust DPO with label smoothing (TRL 1.13 uses label_smoothing in robust, exo_pair and the AOT losses).
    "robust": {"data": "conversational", "tuna": ["--loss_type", "robust", "--label_smoothing", "0.1"], "trl": {"loss_type": ["robust"], "label_smoothing": 0.1}},
    # The reference log-probabilities computed once before training.
    "precompute": {"data": "text", "tuna": ["--precompute_ref_log_probs", "true"], "trl": {"precompute_ref_log_probs": True}},
    # LD-DPO: the completions' tokens beyond the shorter one's length weighted 0.5.
    "ld": {"data": "text", "tuna": ["--ld_alpha", "0.5"], "trl": {"ld_alpha": 0.5}},
    # f-DPO: the losses compare f-scores of the log-ratios (IPO divides the score of the sum by the length).
    "js": {"data": "text", "tuna": ["--f_divergence_type", "js_divergence"], "trl": {"f_divergence_type": "js_divergence"}},
    "alpha-ipo": {"data": "text", "tuna": ["--loss_type", "ipo", "--f_divergence_type", "alpha_divergence", "--f_alpha_divergence_coef", "0.3"],
                  "trl": {"loss_type": ["ipo"], "f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0.3}},
    "forward-kl-hinge": {"data": "conversational", "tuna": ["--loss_type", "hinge", "--f_divergence_type", "forward_kl"],
                         "trl": {"loss_type": ["hinge"], "f_divergence_type": "forward_kl"}},
    # MPO's loss list with weights (sft: the chosen completions' NLL, older TRL's RPO).
    "mpo": {"data": "conversational", "tuna": ["--loss_type", "sigmoid,bco_pair,sft", "--loss_weights", "0.8,0.2,1.0"],
            "trl": {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]}},
}
METRICS = ["loss", "grad_norm", "learning_rate", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"]


def rows(kind: str, n: int) -> list[dict]:
    rng = random.Random(7 + len(kind))
    out = []
    for _ in range(n):
        p, c, r = phrase(rng, 2, 8), phrase(rng, 1, 8), phrase(rng, 1, 8)
        if kind == "text":
            out.append({"prompt": f"Q: {p}?", "chosen": f" A: {c}.", "rejected": f" A: {r}!"})
        else:
            out.append({"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": c}], "rejected": [{"role": "assistant", "content": r}]})
    return out


def shared_flags() -> list[str]:
    flags = ["--splits", "train", "--use_peft_lora", "--max_steps", str(STEPS), "--logging_steps", "1", "--save_strategy", "no",
             "--report_to", "jsonl", "--device", "cpu"]
    for k, v in {**LORA, **SETTINGS}.items():
        flags += [f"--{k}", str(v)]
    return flags


golden = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__, "trl": trl.__version__},
          "steps": STEPS, "flags": shared_flags(), "cases": {}}
os.makedirs(OUT, exist_ok=True)
for name, case in CASES.items():
    kind = case["data"]
    data = rows(kind, 14)
    data_path = os.path.join(OUT, f"{kind}.jsonl")
    with open(data_path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in data)
    work = tempfile.mkdtemp()
    init_dir = os.path.join(work, "init")
    init_file = tuna_initial_adapter(ROOT, "dpo", ["--model_name_or_path", MODEL, "--dataset_name", data_path, *shared_flags(), *case["tuna"]], init_dir)
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    base = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, init_dir, is_trainable=True)
    seen = []
    trl_settings = {k: v for k, v in SETTINGS.items()}
    args = DPOConfig(output_dir=os.path.join(work, "trl"), max_steps=STEPS, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                     bf16=False, dataloader_num_workers=0, **trl_settings, **case["trl"])
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tokenizer)
    collate = trainer.data_collator

    def recording(examples):
        batch = collate(examples)
        seen.append({k: batch[k].tolist() for k in ("input_ids", "completion_mask") if k in batch})
        return batch

    trainer.data_collator = recording
    trainer.train()
    logs = [{k: e[k] for k in ["step", *METRICS] if k in e} for e in trainer.state.log_history if "loss" in e]
    save_file(lora_tensors(model), os.path.join(OUT, f"{name}.final.safetensors"))
    shutil.copy(init_file, os.path.join(OUT, "init.safetensors"))
    golden["cases"][name] = {"data": f"{kind}.jsonl", "flags": case["tuna"], "trl": case["trl"], "logs": logs, "batches": seen}
    shutil.rmtree(work)
    print(name, [round(l["loss"], 6) for l in logs])

with open(os.path.join(OUT, "golden.json"), "w", encoding="utf-8") as f:
    json.dump(golden, f)
print(f"wrote {OUT}/golden.json")
