#!/usr/bin/env bash
# `scaletrain bench scaling` on a 16-core CPU machine or on a 2-GPU machine (docs/performance.md).
# Usage: OUT=out_dir bash benchmarks/scaling_bench.sh cpu|gpu
# Where mpi4py uses the system's Open MPI, name its launcher, e.g.
#   MPIEXEC="--mpiexec=mpirun --mpiexec-args=--oversubscribe" bash benchmarks/scaling_bench.sh gpu
# (several launcher arguments: run the command by hand with --mpiexec-args '--a --b').
set -euo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-bench_scaling}; mkdir -p "$OUT"
# shellcheck disable=SC2086  # MPIEXEC holds several words on purpose
case "${1:-cpu}" in
cpu)  # the small supervised model, one core per process; N up to the 16 cores
  python -m scaletrain bench scaling --modes allreduce,downpour,easgd,gem \
    --np 1,2,3,4,8,16 --device cpu --steps 100 --warmup 5 --repeats 3 ${MPIEXEC:-} \
    --out "$OUT/cpu" 2>&1 | tee "$OUT/cpu.log" ;;
gpu)  # the published 3DGAN on the trainer's fastest GPU path (fast step, compiled, bf16,
      # data on the GPU); all-reduce judged at N <= GPUs, parameter servers at N = 2, 3
  nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
  for batch in 128 1024; do
    python -m scaletrain bench scaling --model 3dgan --modes allreduce,downpour,easgd,gem \
      --np 1,2,3 --device cuda --precision bf16 --batch-size "$batch" --steps 50 --warmup 10 \
      --repeats 2 --timeout 1500 ${MPIEXEC:-} \
      --out "$OUT/gpu_b$batch" \
      2>&1 | tee "$OUT/gpu_b$batch.log"
  done ;;
*) echo "usage: bash benchmarks/scaling_bench.sh cpu|gpu" >&2; exit 2 ;;
esac
