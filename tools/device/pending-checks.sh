#!/usr/bin/env bash
# Everything the CPU-only sessions left for the GPU machine, in one device call (device time is scarce: see
# ../shared/device/README.md for bringing Node there; run from the checkout after `npm run build:gpu` here and
# copying dist/ + src/ + tools/ + test/ + examples/ + bin/). Outputs go to $OUT (the device tool's folder) when set.
#   bash tools/device/pending-checks.sh
# 1. The golden dumps with the cases added since they were made (llama_dora, qwen3, gemma2, gemma3, phi3), packed
#    for `rm -rf test/golden && tar -C test -xf golden.tar` here; test/model/causal-lm/golden.test.ts then checks
#    every case the manifest lists.
# 2. The DPO dumps (issue 14).
# 3. Every backend op on the GPU against the CPU reference: DoRA ops, GeGLU, soft-caps, windowed and soft-capped
#    attention (forward, backward, decode) are new since the last GPU run.
# 4. The GPU training, end-to-end and parity tests; 5. the distributed checks; 6. MLflow's reader on tuna's files.
# 7. tuna serve's continuous batching on the GPU against transformers' batched generate (issue 17), same call.
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/tuna-pending}"
mkdir -p "$OUT"
status=0
run() { echo "== $*"; "$@" || { echo "FAILED: $*"; status=1; }; }

run python3 tools/golden/make_golden.py --out /tmp/golden
tar -C /tmp -cf "$OUT/golden.tar" golden && cp /tmp/golden/make_golden.log "$OUT/" 2>/dev/null
run python3 tools/golden/make_dpo_golden.py --golden /tmp/golden --out /tmp/dpo
tar -C /tmp -cf "$OUT/dpo.tar" dpo 2>/dev/null
run node --test dist/test-gpu/backend-ops.gpu.test.mjs
run node --test dist/test-gpu/train-parity.gpu.test.mjs dist/test-gpu/train-e2e.gpu.test.mjs dist/test-gpu/cuda-runtime.gpu.test.mjs dist/test-gpu/doctor.gpu.test.mjs
# 6. MLflow's own client reads a tuna run's file store (issue 15).
rm -rf /tmp/tuna-mlflow && mkdir -p /tmp/tuna-mlflow
MLFLOW_TRACKING_URI=/tmp/tuna-mlflow/mlruns run node bin/tuna.js train --model_name_or_path examples/tiny-llama \
  --dataset_name test/fixtures/chat-small.jsonl --splits train,test --test_split_ratio 0.25 --chat_template_format chatml \
  --use_peft_lora --lora_r 4 --max_seq_length 48 --packing --max_steps 4 --logging_steps 1 --eval_strategy steps \
  --eval_steps 2 --save_strategy no --report_to mlflow --run_name mlflow-check --device cpu --output_dir /tmp/tuna-mlflow/run
run python3 tools/device/check_mlflow.py /tmp/tuna-mlflow/mlruns /tmp/tuna-mlflow/run
run bash tools/device/distributed-checks.sh
# 7. Issue 17's throughput run: a 7B shape, 64 requests of 512 + 256 tokens; the peer in the same call.
run npx tsx tools/bench/serve-throughput.ts --preset llama-2-7b --requests 64 --prompt_tokens 512 --output_tokens 256 --max_batch 64 --device cuda --bf16 | tee "$OUT/serve-throughput.txt"
run npx tsx tools/bench/serve-throughput.ts --preset llama-2-7b --requests 64 --prompt_tokens 512 --output_tokens 256 --max_batch 64 --adapters 2 --device cuda --bf16 | tee -a "$OUT/serve-throughput.txt"
run python3 tools/bench/hf_generate_throughput.py --preset llama-2-7b --requests 64 --prompt_tokens 512 --output_tokens 256 | tee -a "$OUT/serve-throughput.txt"
exit $status
