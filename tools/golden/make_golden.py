# Builds tuna's golden-parity dumps: tiny random-init HF models (llama, llama3, mistral, qwen2) with a
# PEFT LoRA adapter, and their inputs, logits, loss and LoRA gradients. See tools/golden/README.md.
"""Run where torch, transformers and peft are installed:

    python3 tools/golden/make_golden.py --out test/golden

Everything runs on the CPU in float32 with eager attention, so the numbers do not depend on a GPU.
"""

import argparse
import copy
import inspect
import json
import math
import os
import re
import shutil
import sys
import traceback

import torch
import torch.nn.functional as F

import peft
import safetensors
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3TextConfig,
    Gemma3ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
)

VOCAB = 256
FIRST_REAL_TOKEN = 3  # 0 pad, 1 bos, 2 eos are never drawn
PAD_ID = 0
WEIGHT_STD = 0.125  # large enough that attention is far from uniform and logits are O(1)
PADDED_T = 12
PADDED_ROW1_LEN = 8
PROMPT_MASKED = 4  # labels[0, :4] = -100 in the padded case
DOC_LENS = (5, 9, 4)
DOC2_MASKED = (2, 3, 4)  # positions inside doc 2 whose labels are -100

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=128,
    hidden_act="silu",
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=PAD_ID,
)

# rope is given as (rope_theta, rope_scaling-or-None); translated to the installed transformers' API.
FAMILIES = {
    "llama": dict(
        config_cls=LlamaConfig, model_cls=LlamaForCausalLM, seed=1001,
        kwargs=dict(COMMON, num_key_value_heads=4, rms_norm_eps=1e-5, tie_word_embeddings=False,
                    attention_bias=False, mlp_bias=False),
        rope=(10000.0, None),
    ),
    "llama3": dict(
        config_cls=LlamaConfig, model_cls=LlamaForCausalLM, seed=1002,
        kwargs=dict(COMMON, num_key_value_heads=1, head_dim=16, rms_norm_eps=1e-5,
                    tie_word_embeddings=False, attention_bias=False, mlp_bias=False),
        # original_max_position_embeddings 48 puts head_dim 16's eight frequencies in all three llama3
        # regimes (wavelength 6.3 < 48/4 kept, 32.4 smoothed, the rest > 48 divided by 8).
        rope=(500000.0, dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                             original_max_position_embeddings=48)),
    ),
    "mistral": dict(
        config_cls=MistralConfig, model_cls=MistralForCausalLM, seed=1003,
        kwargs=dict(COMMON, num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=False,
                    sliding_window=None),
        rope=(1000000.0, None),
    ),
    "qwen2": dict(
        config_cls=Qwen2Config, model_cls=Qwen2ForCausalLM, seed=1004,
        kwargs=dict(COMMON, num_key_value_heads=2, rms_norm_eps=1e-6, tie_word_embeddings=True,
                    use_sliding_window=False, sliding_window=None, max_window_layers=2),
        rope=(1000000.0, None),
    ),
    # Qwen3: q_norm / k_norm (1 + 0.1 N(0,1) like every norm here), head_dim 12 != hidden / heads, untied,
    # sliding window 5 on layer 1 only (use_sliding_window with max_window_layers 1) so windows are checked too.
    "qwen3": dict(
        config_cls=Qwen3Config, model_cls=Qwen3ForCausalLM, seed=1005,
        kwargs=dict(COMMON, num_key_value_heads=2, head_dim=12, rms_norm_eps=1e-6, tie_word_embeddings=False,
                    attention_bias=False, use_sliding_window=True, sliding_window=5, max_window_layers=1),
        rope=(1000000.0, None),
    ),
    # Gemma 2: norms applied as 1 + w (so w ~ 0.1 N(0,1) here), GeGLU, soft-capped scores and logits (small caps
    # so the tanh bends them), query_pre_attn_scalar 6 (not head_dim), window 5 on the even layers, tied head.
    "gemma2": dict(
        config_cls=Gemma2Config, model_cls=Gemma2ForCausalLM, seed=1006, norm_unit=0.0,
        kwargs=dict(COMMON, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6, tie_word_embeddings=True,
                    hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=6, sliding_window=5,
                    attn_logit_softcapping=3.0, final_logit_softcapping=5.0),
        rope=(10000.0, None),
    ),
    # Gemma 3 text: q/k norms (1 + w), layer 0 sliding (window 5, local RoPE base 100), layer 1 global
    # (sliding_window_pattern 2), no soft-caps.
    "gemma3": dict(
        config_cls=Gemma3TextConfig, model_cls=Gemma3ForCausalLM, seed=1007, norm_unit=0.0,
        kwargs=dict(COMMON, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6, tie_word_embeddings=True,
                    hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=16, sliding_window=5,
                    sliding_window_pattern=2, rope_local_base_freq=100.0),
        rope=(1000000.0, None),
    ),
    # Phi-3: fused qkv_proj and gate_up_proj (PEFT adapts the fused modules), GQA 4/2, window 5 on every layer.
    "phi3": dict(
        config_cls=Phi3Config, model_cls=Phi3ForCausalLM, seed=1008,
        kwargs=dict(COMMON, num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=5,
                    resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0, original_max_position_embeddings=128),
        rope=(10000.0, None),
    ),
}

LORA_ALL = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM",
                init_lora_weights=False)
LORA_RS = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
               init_lora_weights=False, use_rslora=True)
# DoRA: PEFT sets each magnitude to ||W + s B A|| at creation; the script then scales them by 1 +- 0.3 so the
# factor magnitude / norm is not 1 and every term of DoRA's forward and backward is exercised.
LORA_DORA = dict(LORA_ALL, use_dora=True)

# case name -> (family, lora kwargs)
CASES = {
    "llama": ("llama", LORA_ALL),
    "llama_rslora": ("llama", LORA_RS),
    "llama_dora": ("llama", LORA_DORA),
    "llama3": ("llama3", LORA_ALL),
    "mistral": ("mistral", LORA_ALL),
    "qwen2": ("qwen2", LORA_ALL),
    "qwen3": ("qwen3", LORA_ALL),
    "gemma2": ("gemma2", LORA_ALL),
    "gemma3": ("gemma3", LORA_ALL),
    "phi3": ("phi3", LORA_ALL),
}

TV_MAJOR = int(transformers.__version__.split(".")[0])
CHECKS = []  # (name, max_abs_diff, tolerance, fatal)


class Tee:
    """Copies everything written to stdout/stderr into the log file."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, s):
        self.stream.write(s)
        self.log.write(s)

    def flush(self):
        self.stream.flush()
        self.log.flush()


def check(name, a, b, tol, fatal=True):
    d = (a.detach().double() - b.detach().double()).abs().max().item() if a.numel() else 0.0
    ok = d <= tol
    CHECKS.append((name, d, tol, fatal, ok))
    print(f"  check {name}: max_abs_diff={d:.3e} tol={tol:.0e} {'ok' if ok else 'FAIL' if fatal else 'differs (informational)'}")
    return ok


def make_config(fam):
    spec = FAMILIES[fam]
    kwargs = dict(spec["kwargs"])
    theta, scaling = spec["rope"]
    params = inspect.signature(spec["config_cls"].__init__).parameters
    if "rope_parameters" in params:  # transformers 5: theta and scaling live in one dict
        rp = {"rope_type": "default", "rope_theta": theta}
        if scaling is not None:
            rp.update(scaling)
        if "rope_local_base_freq" in kwargs:  # Gemma 3: one dict per layer type, the local base for sliding layers
            local = kwargs.pop("rope_local_base_freq")
            rp = {"full_attention": rp, "sliding_attention": {"rope_type": "default", "rope_theta": local}}
        kwargs["rope_parameters"] = rp
    else:
        kwargs["rope_theta"] = theta
        kwargs["rope_scaling"] = scaling
    try:
        config = spec["config_cls"](attn_implementation="eager", **kwargs)
    except TypeError:
        config = spec["config_cls"](**kwargs)
        config._attn_implementation = "eager"
    if TV_MAJOR >= 5:
        config.dtype = torch.float32
    else:
        config.torch_dtype = torch.float32
    return config


def build_model(fam):
    spec = FAMILIES[fam]
    torch.manual_seed(spec["seed"])
    config = make_config(fam)
    model = spec["model_cls"](config).float()
    if getattr(model.config, "_attn_implementation", None) != "eager":
        model.set_attn_implementation("eager")
    # Re-initialise every weight ourselves so the values do not depend on transformers' init code.
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied lm_head/embed_tokens is listed once
            if "norm" in name:
                p.copy_(spec.get("norm_unit", 1.0) + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.02 * torch.randn_like(p))
            else:
                p.normal_(0.0, WEIGHT_STD)
    model.eval()  # dropout is 0 anyway; eval keeps it so
    return model


def expected_inv_freq(fam):
    """inv_freq from the formulas in specs/safetensors.md section 4, computed independently of transformers."""
    theta, scaling = FAMILIES[fam]["rope"]
    kw = FAMILIES[fam]["kwargs"]
    d = kw.get("head_dim", kw["hidden_size"] // kw["num_attention_heads"])
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    if scaling is None:
        return inv
    old = scaling["original_max_position_embeddings"]
    lo, hi, factor = scaling["low_freq_factor"], scaling["high_freq_factor"], scaling["factor"]
    low_wl, high_wl = old / lo, old / hi
    wl = 2 * math.pi / inv
    out = torch.where(wl > low_wl, inv / factor, inv)
    smooth = (old / wl - lo) / (hi - lo)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wl < high_wl) & ~(wl > low_wl)
    return torch.where(medium, smoothed, out)


def make_data(fam):
    g = torch.Generator().manual_seed(FAMILIES[fam]["seed"] + 7)
    ids = torch.randint(FIRST_REAL_TOKEN, VOCAB, (2, PADDED_T), generator=g, dtype=torch.int64)
    mask = torch.ones(2, PADDED_T, dtype=torch.int64)
    ids[1, PADDED_ROW1_LEN:] = PAD_ID
    mask[1, PADDED_ROW1_LEN:] = 0
    labels = ids.clone()
    labels[mask == 0] = -100
    labels[0, :PROMPT_MASKED] = -100
    padded = dict(input_ids=ids, attention_mask=mask, labels=labels)

    docs, doc_labels = [], []
    for i, n in enumerate(DOC_LENS):
        d = torch.randint(FIRST_REAL_TOKEN, VOCAB, (n,), generator=g, dtype=torch.int64)
        lab = d.clone()
        lab[0] = -100  # HF DataCollatorWithFlattening convention: a document start is never a target
        if i == 1:
            lab[list(DOC2_MASKED)] = -100
        docs.append(d)
        doc_labels.append(lab)
    cu = [0]
    for n in DOC_LENS:
        cu.append(cu[-1] + n)
    packed = dict(
        input_ids=torch.cat(docs)[None],
        position_ids=torch.cat([torch.arange(n, dtype=torch.int64) for n in DOC_LENS])[None],
        cu_seqlens=torch.tensor(cu, dtype=torch.int64),
        labels=torch.cat(doc_labels)[None],
    )
    return padded, packed, docs, doc_labels


def peft_key(param_name):
    # base_model.model.<path>.lora_A.default.weight -> base_model.model.<path>.lora_A.weight;
    # <path>.lora_magnitude_vector.default.weight -> <path>.lora_magnitude_vector (as PEFT saves DoRA's magnitude)
    name = re.sub(r"\.lora_magnitude_vector\.default\.weight$", ".lora_magnitude_vector", param_name)
    return re.sub(r"\.(lora_[AB])\.default\.", r".\1.", name)


def lora_grads(model):
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert ".lora_" in name, f"unexpected trainable parameter {name}"
            assert p.grad is not None, f"no gradient for {name}"
            out[peft_key(name)] = p.grad.detach().clone()
    return out


def packed_reference(model, docs, doc_labels):
    """Each document run alone (no padding, positions 0..n-1); loss = summed CE / trained tokens."""
    logits, total, count = [], 0.0, 0
    for d, lab in zip(docs, doc_labels):
        lg = model(input_ids=d[None]).logits[0]  # (n, V)
        total = total + F.cross_entropy(lg[:-1], lab[1:], ignore_index=-100, reduction="sum")
        count += int((lab[1:] != -100).sum())
        logits.append(lg)
    return torch.cat(logits)[None], total / count, count


def block_diagonal_mask(cu_seqlens):
    """Additive (1, 1, T, T) float mask: causal inside each document, -inf-like across documents."""
    t = int(cu_seqlens[-1])
    doc = torch.zeros(t, dtype=torch.int64)
    for i in range(len(cu_seqlens) - 1):
        doc[int(cu_seqlens[i]):int(cu_seqlens[i + 1])] = i
    allowed = (doc[:, None] == doc[None, :]) & torch.ones(t, t, dtype=torch.bool).tril()
    mask = torch.zeros(t, t)
    mask[~allowed] = torch.finfo(torch.float32).min
    return mask[None, None]


def save_tensors(path, tensors):
    clean = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    save_file(clean, path, metadata={"format": "pt"})
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in clean.items()}


def save_model(model, directory):
    try:
        model.save_pretrained(directory, safe_serialization=True)
    except TypeError:  # safe_serialization dropped from the signature (safetensors is the only format)
        model.save_pretrained(directory)


def load_base(directory):
    kw = dict(attn_implementation="eager")
    kw["dtype" if TV_MAJOR >= 5 else "torch_dtype"] = torch.float32
    return AutoModelForCausalLM.from_pretrained(directory, **kw).eval()


def run_case(case, out_dir, base_models, data):
    fam, lora_kwargs = CASES[case]
    print(f"\n=== case {case} (family {fam}) ===")
    case_dir = os.path.join(out_dir, case)
    os.makedirs(case_dir, exist_ok=True)
    base = base_models[fam]
    if case == fam:
        model_dir = os.path.join(case_dir, "model")
        save_model(base, model_dir)
        with open(os.path.join(model_dir, "config.json")) as f:
            print("  config.json:", json.dumps(json.load(f), sort_keys=True))
        saved = load_file(os.path.join(model_dir, "model.safetensors"))
        print("  model.safetensors:", {k: list(v.shape) for k, v in sorted(saved.items())})
        print("  model.safetensors dtypes:", sorted({str(v.dtype) for v in saved.values()}))
    model_rel = f"{fam}/model"

    # The global layers' frequencies (Gemma 3's local ones live in another module; transformers 5 may keep one
    # buffer per layer type): compared when the model has the plain buffer, reported otherwise.
    rotary = base.model.rotary_emb
    inv_freq = getattr(rotary, "inv_freq", None)
    if inv_freq is None:
        inv_freq = getattr(rotary, "full_attention_inv_freq", None)
    if inv_freq is not None:
        check(f"{case}.rope_inv_freq_vs_formula", inv_freq.float(), expected_inv_freq(fam), 1e-6)
    else:
        print(f"  {case}: rotary_emb has no inv_freq buffer ({sorted(n for n, _ in rotary.named_buffers())}); not compared")

    torch.manual_seed(FAMILIES[fam]["seed"] + (100 if case != fam else 50))
    model = get_peft_model(copy.deepcopy(base), LoraConfig(**lora_kwargs))
    model.eval()
    scalings = sorted({m.scaling["default"] for m in model.modules() if isinstance(getattr(m, "scaling", None), dict)})
    r, alpha = lora_kwargs["r"], lora_kwargs["lora_alpha"]
    want = alpha / math.sqrt(r) if lora_kwargs.get("use_rslora") else alpha / r
    print(f"  lora scaling values: {scalings} (expected {want})")
    assert scalings == [want], "unexpected LoRA scaling"
    if lora_kwargs.get("use_dora"):
        with torch.no_grad():
            for n, p in model.named_parameters():
                if ".lora_magnitude_vector." in n:
                    p.mul_(1.0 + 0.3 * (2.0 * torch.rand_like(p) - 1.0))
        magnitudes = sum(1 for n, _ in model.named_parameters() if ".lora_magnitude_vector." in n)
        print(f"  DoRA magnitude vectors: {magnitudes} (scaled by 1 +- 0.3 after PEFT's init)")
        assert magnitudes > 0
    nonzero_b = all(p.abs().sum() > 0 for n, p in model.named_parameters() if ".lora_B." in n)
    print(f"  every lora_B nonzero: {nonzero_b}")
    assert nonzero_b

    adapter_dir = os.path.join(case_dir, "adapter")
    model.save_pretrained(adapter_dir)
    card = os.path.join(adapter_dir, "README.md")
    if os.path.exists(card):  # PEFT's generated model card: boilerplate, not data
        os.remove(card)
    adapter = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        acfg = json.load(f)
    print(f"  adapter_config: r={acfg['r']} lora_alpha={acfg['lora_alpha']} use_rslora={acfg.get('use_rslora')} use_dora={acfg.get('use_dora')} "
          f"target_modules={sorted(acfg['target_modules']) if isinstance(acfg['target_modules'], list) else acfg['target_modules']}")
    print(f"  adapter tensors: {len(adapter)}, dtypes {sorted({str(v.dtype) for v in adapter.values()})}, first key {sorted(adapter)[0]}")

    padded, packed, docs, doc_labels = data[fam]
    files = {}

    # (a) padded batch
    want_hidden = case == "llama"
    layer_outs = {}
    hooks = []
    if want_hidden:
        for i, layer in enumerate(model.base_model.model.model.layers):
            hooks.append(layer.register_forward_hook(
                lambda mod, inp, out, i=i: layer_outs.__setitem__(i, (out[0] if isinstance(out, tuple) else out).detach().clone())))
    model.zero_grad(set_to_none=True)
    out = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"], labels=padded["labels"],
                output_hidden_states=want_hidden)
    for h in hooks:
        h.remove()
    out.loss.backward()
    grads_a = lora_grads(model)
    assert set(grads_a) == set(adapter), f"grad keys differ from saved adapter keys: {set(grads_a) ^ set(adapter)}"
    logits_a = out.logits.detach()
    print(f"  (a) loss={out.loss.item():.6f} logits std={logits_a.std().item():.3f}")
    lab = padded["labels"][:, 1:]
    own = F.cross_entropy(logits_a[:, :-1].reshape(-1, VOCAB), lab.reshape(-1), ignore_index=-100)
    check(f"{case}.a.loss_vs_own_ce", out.loss.detach(), own, 1e-6)
    with torch.no_grad():
        alone = model(input_ids=padded["input_ids"][1:, :PADDED_ROW1_LEN]).logits
        check(f"{case}.a.row1_real_tokens_vs_unpadded_run", logits_a[1:, :PADDED_ROW1_LEN], alone, 1e-5)
        with model.disable_adapter():
            base_logits = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
    tensors = dict(padded)
    tensors.update(logits=logits_a, loss=out.loss.detach(), logits_base=base_logits, **({} if inv_freq is None else {"rope.inv_freq": inv_freq.float()}))
    tensors.update({f"grad.{k}": v for k, v in grads_a.items()})
    if want_hidden:
        for i, h in enumerate(out.hidden_states):
            tensors[f"hidden.{i}"] = h
        for i, h in sorted(layer_outs.items()):
            tensors[f"layer_out.{i}"] = h
        n = len(out.hidden_states)
        print(f"  hidden_states: {n} tensors; hidden.{n-1} vs layer_out.{n-2} (raw last layer) "
              f"max diff {(out.hidden_states[-1] - layer_outs[n - 2]).abs().max().item():.3e} "
              f"(nonzero means the last entry is after the final norm)")
        for i in range(n - 2):
            check(f"{case}.a.hidden.{i+1}_vs_layer_out.{i}", out.hidden_states[i + 1], layer_outs[i], 0.0)
    files["a"] = {"path": f"{case}/a.safetensors", "tensors": save_tensors(os.path.join(case_dir, "a.safetensors"), tensors)}

    # (b) packed row, reference = each document alone
    model.zero_grad(set_to_none=True)
    logits_b, loss_b, count = packed_reference(model, docs, doc_labels)
    loss_b.backward()
    grads_b = lora_grads(model)
    print(f"  (b) loss={loss_b.item():.6f} trained tokens={count}")
    tensors = dict(packed)
    tensors.update(logits=logits_b.detach(), loss=loss_b.detach())
    tensors.update({f"grad.{k}": v for k, v in grads_b.items()})
    files["b"] = {"path": f"{case}/b.safetensors", "tensors": save_tensors(os.path.join(case_dir, "b.safetensors"), tensors)}

    # transformers' own packed path: position_ids restarting at 0, no attention_mask and no cache make
    # masking_utils build a block-diagonal causal mask (eager included). use_cache=False matters: with a
    # cache (config.use_cache defaults to true) the packed detection is skipped. Informational only.
    for variant in ("position_ids", "4d_mask"):
        try:
            model.zero_grad(set_to_none=True)
            kw = dict(input_ids=packed["input_ids"], position_ids=packed["position_ids"], labels=packed["labels"],
                      use_cache=False)
            if variant == "4d_mask":
                kw["attention_mask"] = block_diagonal_mask(packed["cu_seqlens"])
            hf = model(**kw)
            hf.loss.backward()
            hf_grads = lora_grads(model)
            check(f"{case}.b.hf_packed_{variant}.logits_vs_per_doc", hf.logits, logits_b, 1e-5, fatal=False)
            check(f"{case}.b.hf_packed_{variant}.loss_vs_per_doc", hf.loss, loss_b, 1e-6, fatal=False)
            check(f"{case}.b.hf_packed_{variant}.grads_vs_per_doc",
                  torch.cat([hf_grads[k].flatten() for k in sorted(grads_b)]),
                  torch.cat([grads_b[k].flatten() for k in sorted(grads_b)]), 1e-5, fatal=False)
        except Exception as e:  # noqa: BLE001 - report and go on; the per-document reference stands alone
            print(f"  transformers packed path ({variant}) failed: {e!r}")

    # Reload from disk (base from model/, adapter from adapter/) and reproduce the dumped logits.
    reloaded = PeftModel.from_pretrained(load_base(os.path.join(out_dir, model_rel)), adapter_dir).eval()
    with torch.no_grad():
        ra = reloaded(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"], labels=padded["labels"])
        check(f"{case}.reload.a.logits", ra.logits, logits_a, 1e-5)
        check(f"{case}.reload.a.loss", ra.loss, out.loss, 1e-6)
        rb = torch.cat([reloaded(input_ids=d[None]).logits[0] for d in docs])[None]
        check(f"{case}.reload.b.logits", rb, logits_b, 1e-5)

    lora_meta = {k: v for k, v in lora_kwargs.items()}
    lora_meta["scaling"] = scalings
    return {
        "family": fam,
        "model_dir": model_rel,
        "adapter_dir": f"{case}/adapter",
        "lora": lora_meta,
        "files": files,
        "notes": {
            "a": "labels unshifted (HF convention); pads are id 0 with attention_mask 0 and label -100; "
                 "logits at pad positions are transformers' values and need not be compared",
            "b": "reference runs each document alone; labels at each document start are -100 "
                 "(DataCollatorWithFlattening convention), so a row-wide shift never trains across a boundary",
        },
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (test/golden in the repo)")
    args = ap.parse_args()
    out_dir = args.out
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    log = open(os.path.join(out_dir, "make_golden.log"), "w")
    sys.stdout, sys.stderr = Tee(sys.__stdout__, log), Tee(sys.__stderr__, log)

    torch.set_num_threads(1)  # fixed reduction order on the CPU
    torch.set_default_dtype(torch.float32)
    versions = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
                "peft": peft.__version__, "safetensors": safetensors.__version__}
    print("versions:", versions)

    base_models = {fam: build_model(fam) for fam in FAMILIES}
    data = {fam: make_data(fam) for fam in FAMILIES}
    manifest = {
        "description": "tuna golden-parity dumps: HF transformers + PEFT LoRA on tiny random-init models (CPU, float32, eager attention)",
        "versions": versions,
        "command": " ".join(["python3"] + sys.argv),
        "regenerate": "python3 tools/golden/make_golden.py --out test/golden",
        "cases": {},
    }
    failed = False
    for case in CASES:
        try:
            manifest["cases"][case] = run_case(case, out_dir, base_models, data)
        except Exception:  # noqa: BLE001 - keep going so one device run shows every problem
            traceback.print_exc()
            failed = True
    manifest["checks"] = [{"name": n, "max_abs_diff": d, "tol": t, "fatal": f, "ok": ok} for n, d, t, f, ok in CHECKS]
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    bad = [c for c in CHECKS if c[3] and not c[4]]
    info = [c for c in CHECKS if not c[3] and not c[4]]
    print(f"\nchecks: {len(CHECKS)} run, {len(bad)} failed, {len(info)} informational differences")
    total = sum(os.path.getsize(os.path.join(r, n)) for r, _, ns in os.walk(out_dir) for n in ns)
    print(f"total size: {total} bytes")
    sys.stdout.flush()
    if failed or bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
