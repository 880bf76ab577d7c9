"""Loads a tuna-trained adapter with transformers + PEFT and compares its logits with tuna's.

python3 tools/peft-check/check_peft_load.py <base model dir> <adapter dir> <tuna logits json>
Resizes the base embeddings to the adapter's vocabulary first (as the peft sft example does after
adding chat tokens), then PeftModel.from_pretrained, then one forward in float32 on the CPU.
"""
import json
import sys

import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoModelForCausalLM

base_dir, adapter_dir, logits_path = sys.argv[1:4]
ref = json.load(open(logits_path))
model = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32, attn_implementation="eager")
with safe_open(f"{adapter_dir}/adapter_model.safetensors", "pt") as f:
    keys = list(f.keys())
    emb = [k for k in keys if k.endswith("embed_tokens.weight")]
    vocab = f.get_tensor(emb[0]).shape[0] if emb else model.config.vocab_size
print("adapter tensors:", len(keys), "| saved embedding rows:", vocab)
if vocab != model.config.vocab_size:
    model.resize_token_embeddings(vocab)
model = PeftModel.from_pretrained(model, adapter_dir)
model.eval()
ids = torch.tensor([ref["input_ids"]])
with torch.no_grad():
    out = model(input_ids=ids, use_cache=False).logits[0]
tuna = torch.tensor(ref["logits"]).view(out.shape)
diff = (out - tuna).abs().max().item()
rel = diff / out.abs().max().item()
print(f"peft logits vs tuna: max abs diff {diff:.3e}, relative {rel:.3e}")
base_only = model.get_base_model()
with model.disable_adapter(), torch.no_grad():
    plain = model(input_ids=ids, use_cache=False).logits[0]
print(f"adapter effect (peft with vs without adapter): max abs {(out - plain).abs().max().item():.3e}")
print("PASS" if rel < 1e-4 else "FAIL")
