#!/usr/bin/env bash
# The measurements behind docs/performance.md, in one device call: generation, then training.
# Usage on the GPU machine: OUT=out_dir bash benchmarks/gpu_bench.sh
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv | tee "$OUT/gpu.txt"
python -m scaletrain bench gen --batch-size 8192,16384,32768 --baseline-batch-size 8192 \
  --iters 20 --warmup 3 --physics 2048 --json "$OUT/gen.json" 2>&1 | tee "$OUT/gen.log"
python -m scaletrain bench train --batch-size 1024,2048 --baseline-batch-size 128 \
  --iters 10 --warmup 3 --loss-check 30 --loss-check-batch 256 \
  --json "$OUT/train.json" 2>&1 | tee "$OUT/train.log"
