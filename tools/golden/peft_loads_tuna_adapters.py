"""PEFT loads the adapters tuna writes and computes tuna's logits: the models, adapters and tuna's logits come
from tools/golden/peft-loads-tuna-adapters.ts (OUT, default /tmp/peftcheck). Needs torch, transformers, peft.
Prints, per case, the relative difference of PEFT's logits to tuna's and how far the adapter moves them."""
import os
import json

import torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
OUT = os.environ.get("OUT", "/tmp/peftcheck")
t = json.load(open(os.path.join(OUT, "tuna.json")))
ids = torch.tensor([t["ids"]])
for name, tuna in t["logits"].items():
    base = AutoModelForCausalLM.from_pretrained(os.path.join(OUT, name, "model"), torch_dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, os.path.join(OUT, name, "adapter")).eval()
    with torch.no_grad():
        logits = model(ids).logits[0].flatten()
    tuna_t = torch.tensor(tuna)
    rel = ((logits - tuna_t).abs().max() / tuna_t.abs().max()).item()
    with model.disable_adapter(), torch.no_grad():
        base_logits = model(ids).logits[0].flatten()
    moved = ((base_logits - tuna_t).abs().max() / tuna_t.abs().max()).item()
    print(f"{name}: PEFT vs tuna relative {rel:.2e} (the adapter moves the logits by {moved:.2e}); peft_type {model.peft_config['default'].peft_type}, use_dora {model.peft_config['default'].use_dora}, use_rslora {model.peft_config['default'].use_rslora}")
