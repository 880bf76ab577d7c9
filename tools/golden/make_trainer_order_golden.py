"""The order in which the Hugging Face Trainer visits training examples, from torch, transformers and accelerate
themselves (CPU; the machine's local wheels: python3 -m venv v && v/bin/pip install --no-index --find-links
/opt/pypi/files torch transformers==5.17.0 accelerate): torch.randperm with a seeded torch.Generator, and a real
Trainer's epochs over a dataset whose items are their own index (seed, data_seed, several epochs). Writes
test/golden/trainer-order/golden.json for test/util/torch-random.test.ts and test/data/batches.test.ts.
Usage: python tools/golden/make_trainer_order_golden.py (from the repository root)."""
import json
import os
import tempfile

import accelerate
import torch
import transformers
from transformers import Trainer, TrainingArguments

OUT = os.path.join(os.getcwd(), "test", "golden", "trainer-order")

golden = {"torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__, "randperm": [], "trainer": []}

for n in [0, 1, 2, 3, 10, 97, 1000, 54321]:
    for seed in [0, 1, 42, 43, 1234, 2**31 + 7, 2**32 + 3]:
        g = torch.Generator()
        g.manual_seed(seed)
        perm = torch.randperm(n, generator=g).tolist()
        entry = {"n": n, "seed": seed}
        if n <= 1000:
            entry["perm"] = perm
        else:
            entry["head"] = perm[:20]
            entry["weightedSum"] = sum((i + 1) * p for i, p in enumerate(perm)) % (2**61 - 1)
        golden["randperm"].append(entry)


def length_of(i):
    """Example i's length (what group_by_length sorts by): a fixed scramble of 1..40."""
    return (i * 37 + 11) % 40 + 1


class Indexed(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i >= self.n:
            raise IndexError(i)  # LengthGroupedSampler iterates the dataset
        return {"idx": i, "input_ids": [0] * length_of(i)}


class Recorder(torch.nn.Module):
    """A model whose loss is a parameter times nothing: the Trainer runs its loop, the collator records."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx=None, **kwargs):
        return {"loss": (self.w * 0).sum() + self.w.sum() * 0}


for case in [
    {"n": 23, "batch": 2, "ga": 1, "epochs": 3, "seed": 42},
    {"n": 10, "batch": 4, "ga": 2, "epochs": 2, "seed": 7},
    {"n": 16, "batch": 1, "ga": 1, "epochs": 2, "seed": 42, "data_seed": 1234},
    # LengthGroupedSampler draws from torch's global generator, seeded by the Trainer at construction: its first
    # epoch is reproducible, later ones depend on whatever else drew from it (dropout).
    {"n": 230, "batch": 2, "ga": 2, "epochs": 1, "seed": 42, "strategy": "group_by_length"},
    {"n": 23, "batch": 2, "ga": 1, "epochs": 1, "seed": 5, "strategy": "sequential"},
]:
    seen = []

    def collate(items):
        seen.append([it["idx"] for it in items])
        return {"idx": torch.tensor([it["idx"] for it in items])}

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=case["batch"], gradient_accumulation_steps=case["ga"],
            num_train_epochs=case["epochs"], seed=case["seed"], data_seed=case.get("data_seed"), report_to=[],
            save_strategy="no", logging_strategy="no", use_cpu=True, dataloader_num_workers=0, remove_unused_columns=False,
            train_sampling_strategy=case.get("strategy", "random"),
        )
        Trainer(model=Recorder(), args=args, train_dataset=Indexed(case["n"]), data_collator=collate).train()
    golden["trainer"].append({**case, "batches": seen, "lengths": [length_of(i) for i in range(case["n"])]})

os.makedirs(OUT, exist_ok=True)
with open(os.path.join(OUT, "golden.json"), "w", encoding="utf-8") as f:
    json.dump(golden, f)
print(f"wrote {OUT}/golden.json: {len(golden['randperm'])} permutations, {len(golden['trainer'])} Trainer runs")
