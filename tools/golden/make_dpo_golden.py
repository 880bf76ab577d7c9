"""DPO golden dumps for tuna's preference objective (issue 14), made with torch + PEFT (TRL is not installed
on the GPU machine, so the losses are written out from TRL's DPOTrainer.dpo_loss formulas here).

Uses the committed `llama` golden case (test/golden/llama/model and test/golden/llama/adapter): two preference
pairs of random tokens, each sequence run alone (positions from 0, as tuna's padding-free batch), the reference
the same PeftModel under `disable_adapter()`. For every loss setting it writes test/golden/dpo/<name>.safetensors:
  input_ids, labels         (4 documents end to end: pair 0 chosen, pair 0 rejected, pair 1 chosen, pair 1 rejected;
                             HF per-position labels, -100 on the prompt), cu_seqlens
  policy_logps, ref_logps   (4,) summed over completion tokens (IPO: also the per-token means, *_mean)
  loss                      () the mean over the 2 pairs (+ rpo_alpha x the chosen tokens' mean NLL)
  <every LoRA gradient>     as PEFT names them (base_model.model....lora_A.weight), of that loss

Run on the GPU machine (CPU, float32, one thread), from the repo root:
  python3 tools/golden/make_dpo_golden.py --golden test/golden --out /tmp/dpo && tar -C /tmp -cf $OUT/dpo.tar dpo
and unpack into test/golden/. Not run yet: no device tool in the session that wrote it.
"""
import argparse
import json
import os
import shutil
import sys

import torch
import torch.nn.functional as F
from peft import PeftModel
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

BETA = 0.1
SETTINGS = {
    "sigmoid": dict(loss_type="sigmoid", label_smoothing=0.0, rpo_alpha=None),
    "sigmoid_ls": dict(loss_type="sigmoid", label_smoothing=0.1, rpo_alpha=None),
    "robust": dict(loss_type="robust", label_smoothing=0.1, rpo_alpha=None),
    "hinge": dict(loss_type="hinge", label_smoothing=0.0, rpo_alpha=None),
    "ipo": dict(loss_type="ipo", label_smoothing=0.0, rpo_alpha=None),
    "sigmoid_rpo": dict(loss_type="sigmoid", label_smoothing=0.0, rpo_alpha=0.5),
}
PAIRS = ((5, 4, 6), (3, 7, 2))  # (prompt, chosen, rejected) token counts
VOCAB = 256
FIRST_REAL_TOKEN = 3


def documents():
    g = torch.Generator().manual_seed(4242)
    docs = []
    for p, c, r in PAIRS:
        prompt = torch.randint(FIRST_REAL_TOKEN, VOCAB, (p,), generator=g)
        for n in (c, r):
            completion = torch.randint(FIRST_REAL_TOKEN, VOCAB, (n,), generator=g)
            ids = torch.cat([prompt, completion])
            labels = ids.clone()
            labels[:p] = -100
            docs.append((ids, labels))
    return docs


def sequence_logps(model, docs):
    """Per document: summed log-probability of its labelled tokens, and their count (TRL's concatenated_forward)."""
    sums, counts, nll_sum = [], [], 0.0
    for ids, labels in docs:
        logits = model(input_ids=ids[None]).logits[0].float()
        logp = torch.log_softmax(logits[:-1], -1)
        target = labels[1:]
        mask = target != -100
        token = logp.gather(-1, target.clamp(min=0)[:, None])[:, 0]
        sums.append((token * mask).sum())
        counts.append(int(mask.sum()))
    return torch.stack(sums), torch.tensor(counts, dtype=torch.float32)


def dpo_loss(policy, ref, loss_type, ls):
    """TRL's dpo_loss: policy/ref (4,) in the order chosen0, rejected0, chosen1, rejected1."""
    logits = (policy[0::2] - policy[1::2]) - (ref[0::2] - ref[1::2])
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(BETA * logits) * (1 - ls) - F.logsigmoid(-BETA * logits) * ls
    elif loss_type == "robust":
        losses = (-F.logsigmoid(BETA * logits) * (1 - ls) + F.logsigmoid(-BETA * logits) * ls) / (1 - 2 * ls)
    elif loss_type == "hinge":
        losses = torch.relu(1 - BETA * logits)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * BETA)) ** 2
    else:
        raise ValueError(loss_type)
    return losses.mean()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--golden", required=True, help="the committed golden folder (test/golden)")
    ap.add_argument("--out", required=True, help="output parent folder; writes <out>/dpo")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = os.path.join(args.out, "dpo")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    base = AutoModelForCausalLM.from_pretrained(os.path.join(args.golden, "llama", "model"), dtype=torch.float32, attn_implementation="eager").eval()
    docs = documents()
    manifest = {"beta": BETA, "pairs": PAIRS, "settings": SETTINGS, "files": {}}
    for name, s in SETTINGS.items():
        model = PeftModel.from_pretrained(base, os.path.join(args.golden, "llama", "adapter"), is_trainable=True).eval()
        with torch.no_grad(), model.disable_adapter():
            ref, counts = sequence_logps(model, docs)
        policy, _ = sequence_logps(model, docs)
        if s["loss_type"] == "ipo":
            loss = dpo_loss(policy / counts, ref / counts, "ipo", 0.0)
        else:
            loss = dpo_loss(policy, ref, s["loss_type"], s["label_smoothing"])
        if s["rpo_alpha"] is not None:
            # TRL: cross-entropy over the chosen sequences' labelled tokens (mean over those tokens).
            loss = loss + s["rpo_alpha"] * (-(policy[0::2].sum()) / counts[0::2].sum())
        model.zero_grad()
        loss.backward()
        tensors = {
            "input_ids": torch.cat([d[0] for d in docs]).to(torch.int64),
            "labels": torch.cat([d[1] for d in docs]).to(torch.int64),
            "cu_seqlens": torch.tensor([0] + list(torch.cumsum(torch.tensor([len(d[0]) for d in docs]), 0)), dtype=torch.int64),
            "policy_logps": policy.detach(),
            "ref_logps": ref,
            "completion_tokens": counts,
            "loss": loss.detach().reshape(()),
        }
        for pname, p in model.named_parameters():
            if p.requires_grad:
                tensors[pname.replace(".default.", ".")] = p.grad.detach().clone()
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, f"{name}.safetensors"))
        manifest["files"][name] = f"{name}.safetensors"
        print(f"{name}: loss {loss.item():.8f}", flush=True)
        base = model.unload()  # the bare base model back for the next setting
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
