# Peer for `npm run bench -- --nproc N`: transformers + PEFT LoRA under torchrun with DistributedDataParallel,
# the same model shapes, LoRA settings and optimizer as ../shared/bench/hf_baseline.py (whose CFGS it imports).
#   torchrun --nproc_per_node N tools/bench/peer_ddp.py '<plan json>' <path of hf_baseline.py>
# Each rank trains on its own random batch of mbs x seq tokens; rank 0 prints one JSON line per configuration
# with the global tokens/s (all ranks) and per GPU. Written for the GPU machine (torch 2.x, NCCL); not run in CI.
import importlib.util, json, os, sys, time
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model

torch.backends.cuda.matmul.allow_tf32 = True


def load_cfgs(path):
    spec = importlib.util.spec_from_file_location("hf_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CFGS


def run(cfgs, name, seq, mbs, gc=True, steps=8, warm=3, attn="sdpa", r=16):
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ["LOCAL_RANK"])
    torch.manual_seed(0)
    cfg = LlamaConfig(**cfgs[name]); cfg._attn_implementation = attn
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(f"cuda:{local}"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.config.use_cache = False
    if gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lcfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    model = DDP(get_peft_model(model, lcfg), device_ids=[local])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    gen = torch.Generator(device=f"cuda:{local}").manual_seed(rank)
    ids = torch.randint(0, cfg.vocab_size, (mbs, seq), device=f"cuda:{local}", generator=gen)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warm + steps):
        torch.cuda.synchronize(); dist.barrier(); t = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize(); dt = time.perf_counter() - t
        if i >= warm: times.append(dt)
    # The slowest rank sets the pace: take each step's maximum over ranks.
    t = torch.tensor(times, device=f"cuda:{local}")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    times = sorted(t.tolist()); med = times[len(times) // 2]
    peak = torch.tensor([torch.cuda.max_memory_allocated() / 2**30], device=f"cuda:{local}")
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    tok = seq * mbs * world
    res = dict(model=name, seq=seq, mbs=mbs, gc=gc, attn=attn, r=r, world=world, step_s=round(med, 4),
               tok_s=round(tok / med, 1), tok_s_per_gpu=round(tok / med / world, 1), peak_gib=round(peak.item(), 2),
               tflops=0.0, loss=round(out.loss.item(), 4))
    if rank == 0: print(json.dumps(res), flush=True)
    del model, opt, out; torch.cuda.empty_cache()


if __name__ == "__main__":
    plan, baseline = json.loads(sys.argv[1]), sys.argv[2]
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    dist.init_process_group("nccl")
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    cfgs = load_cfgs(baseline)
    for p in plan:
        try: run(cfgs, **p)
        except Exception as e:
            if dist.get_rank() == 0: print(json.dumps(dict(plan=p, error=repr(e)[:300])), flush=True)
            torch.cuda.empty_cache()
    dist.destroy_process_group()
