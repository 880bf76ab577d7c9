"""The peer for tools/bench/serve-throughput.ts on the GPU machine: transformers' batched `generate` on a
random-weight model of the same shape, N prompts of P random token ids, exactly O new tokens each (min and max
new tokens), greedy; prints output tokens/s and the time to the first token (a batch's prefill plus one step,
measured by a run with max_new_tokens=1). Not yet run (written without a GPU machine this session).
  python tools/bench/hf_generate_throughput.py --preset llama-2-7b --requests 64 --prompt_tokens 512 --output_tokens 256"""
import argparse
import json
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

SHAPES = {
    "llama-2-7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096),
}

parser = argparse.ArgumentParser()
parser.add_argument("--preset", default="llama-2-7b")
parser.add_argument("--requests", type=int, default=64)
parser.add_argument("--prompt_tokens", type=int, default=512)
parser.add_argument("--output_tokens", type=int, default=256)
args = parser.parse_args()

config = AutoConfig.for_model("llama", **SHAPES[args.preset])
torch.manual_seed(0)
with torch.device("cuda"):
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16, attn_implementation="sdpa")
model.eval()
ids = torch.randint(3, config.vocab_size, (args.requests, args.prompt_tokens), device="cuda")
mask = torch.ones_like(ids)


def run(new_tokens: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=False, pad_token_id=0)
    torch.cuda.synchronize()
    assert out.shape[1] == args.prompt_tokens + new_tokens
    return time.perf_counter() - start


run(2)  # warm-up
ttft = run(1)
wall = run(args.output_tokens)
print(json.dumps({
    "peer": "transformers generate (batched, sdpa, bf16)",
    "requests": args.requests, "promptTokens": args.prompt_tokens, "outputTokensEach": args.output_tokens,
    "wallSeconds": round(wall, 2),
    "outputTokensPerSecond": round(args.requests * args.output_tokens / wall, 1),
    "ttftMs": round(ttft * 1000),
    "peakGiB": round(torch.cuda.max_memory_allocated() / 2**30, 2),
}))
