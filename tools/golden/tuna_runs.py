"""What make_trainer_golden.py and make_dpo_trainer_golden.py share: the words their datasets are made of, tuna's
own initial adapter (a run with learning rate 0: AdamW leaves the weights as initialised) and the trained LoRA
tensors of a PeftModel under PEFT's file names."""
import os
import subprocess

WORDS = ["tuna", "fish", "swims", "fast", "in", "the", "sea", "blue", "water", "deep", "ocean", "salt", "wave", "school", "of", "a"]


def phrase(rng, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def tuna_initial_adapter(root: str, command: str, flags: list[str], out: str) -> str:
    """Runs `tuna <command>` with `flags` (which set --learning_rate and --max_steps) at learning rate 0 for one
    step into `out`; returns the adapter file."""
    flags = list(flags)
    flags[flags.index("--learning_rate") + 1] = "0"
    flags[flags.index("--max_steps") + 1] = "1"
    subprocess.run(["node", os.path.join(root, "bin", "tuna.js"), command, *flags, "--output_dir", out], check=True, stdout=subprocess.DEVNULL)
    return os.path.join(out, "adapter_model.safetensors")


def lora_tensors(model) -> dict:
    """The trainable adapter's tensors under PEFT's saved names (".default" dropped; a reference copy left out)."""
    return {k.replace(".default", ""): v.detach().clone().contiguous() for k, v in model.state_dict().items() if "lora_" in k and ".ref." not in k}
