#!/usr/bin/env bash
# The distributed layer's checks on the GPU machine, in one call (see ../shared/device/README.md for bringing
# Node there; run from the checkout after `npm run build:gpu` here and copying dist/ + src/ + tools/ + test/fixtures
# + examples/tiny-llama + bin/). Prints each check's outcome; record them in docs/verification.md.
#   bash tools/device/distributed-checks.sh [--nproc N]
set -u
cd "$(dirname "$0")/../.."
NPROC=1
[ "${1:-}" = "--nproc" ] && NPROC="${2:-1}"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
status=0
run() { echo "== $*"; "$@" || { echo "FAILED: $*"; status=1; }; }

# 1. tuna doctor: NCCL's version, the GPUs and their links.
run node bin/tuna.js doctor
# 2. TCPStore both ways against this machine's torch 2.x (the torch2 protocol's codes).
TUNA_INTEROP_BUNDLE=1 run python3 tools/interop/tcpstore-torch.py
# 3. tuna's client joining a real torchrun agent store: torchrun starts two tuna ranks (CPU), which must train.
run python3 -m torch.distributed.run --nproc_per_node 2 --no-python node bin/tuna.js train \
  --model_name_or_path examples/tiny-llama --dataset_name test/fixtures/chat-small.jsonl --splits train \
  --chat_template_format chatml --use_peft_lora --lora_r 4 --max_seq_length 48 --packing --max_steps 3 \
  --save_strategy no --report_to none --device cpu --output_dir /tmp/tuna-torchrun-agent
# 4. NCCL through the real library, two ranks sharing the GPU through the host transport, the refusal of two
#    NCCL ranks on one GPU.
run node --test dist/test-gpu/dist.gpu.test.mjs
# 5. The benchmark with N ranks (on a machine with N GPUs), with the DDP peer in the same call.
if [ "$NPROC" -gt 1 ]; then
  run node dist/bench-gpu.mjs --models llama2-7b --modes qlora --gc on --nproc "$NPROC" --json /tmp/tuna-bench-nproc.json
fi
exit $status
