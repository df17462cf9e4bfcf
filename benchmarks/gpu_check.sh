#!/bin/bash
# The GPU checks behind README's H200 column, in one run (~5 min on an H100/H200): the CUDA tests, then the
# throughput benchmarks with the machine otherwise idle. Usage: bash benchmarks/gpu_check.sh [OUT_DIR]
set -o pipefail
out=${1:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/cuda_tests.txt"
python benchmarks/train_step.py --device cuda --batch-size 256 --steps 15 --warmup 3 --rounds 1 2>&1 \
  | tee "$out/train_step.txt"
python benchmarks/train_step.py --device cuda --batch-size 256 --steps 15 --warmup 3 --rounds 1 \
  --backbones efficientnet_b0 --modes bf16,compile 2>&1 | tee "$out/train_step_compile.txt"
python benchmarks/input_pipeline.py --device cuda --workers 4,8,14 --batch-size 256 --identities 300 \
  --images-per-identity 20 --batches 30 2>&1 | grep -v 'img/s\]' | tee "$out/input_pipeline.txt"
