#!/usr/bin/env bash
# The single-GPU measurements behind docs/performance.md, in one device call each.
# Usage on the GPU machine: OUT=out_dir bash benchmarks/gpu_bench.sh gen|train|guard
#   gen    generation: fast path vs eager fp32, and the physics check of the fast showers
#   train  training: compiled and uncompiled fast step vs the eager fp32 step
#   guard  a few hundred steps of both training paths, then the fidelity of each generator
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
st="python -m scaletrain"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv | tee "$OUT/gpu.txt"
case "${1:-}" in
gen)
  $st bench gen --batch-size 8192,16384,32768 --baseline-batch-size 8192 --iters 20 --warmup 3 \
    --physics 2048 --json "$OUT/gen.json" 2>&1 | tee "$OUT/gen.log" ;;
train)
  $st bench train --batch-size 1024,2048 --baseline-batch-size 128 --no-compile --iters 5 \
    --warmup 2 --json "$OUT/train_nocompile.json" 2>&1 | tee "$OUT/train_nocompile.log"
  $st bench train --batch-size 2048 --baseline-batch-size 128 --iters 6 --warmup 2 \
    --json "$OUT/train_compiled.json" 2>&1 | tee "$OUT/train_compiled.log" ;;
guard)  # about 6 minutes: 400 eager fp32 steps at batch 128 dominate
  $st bench train --batch-size 1024 --baseline-batch-size 128 --no-compile --iters 2 --warmup 1 \
    --loss-check 400 --loss-check-batch 128 --loss-check-fidelity 2000 \
    --json "$OUT/guard.json" 2>&1 | tee "$OUT/guard.log" ;;
*) echo "usage: OUT=dir bash benchmarks/gpu_bench.sh gen|train|guard" >&2; exit 2 ;;
esac
