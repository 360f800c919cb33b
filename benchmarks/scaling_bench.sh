#!/usr/bin/env bash
# `scaletrain bench scaling` on a 16-core CPU machine or on a 2-GPU machine (docs/performance.md).
# Usage: OUT=out_dir bash benchmarks/scaling_bench.sh cpu|gpu|gpu-allreduce|gpu-ps
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
    --np 1,2,3,4,8,16 --device cpu --steps 600 --warmup 5 --repeats 3 --concurrent-plain --interleave 50 ${MPIEXEC:-} \
    --out "$OUT/cpu" 2>&1 | tee "$OUT/cpu.log" ;;
gpu) bash "$0" gpu-allreduce && bash "$0" gpu-ps ;;
# the published 3DGAN on the trainer's fast GPU path (fast step, bf16, data on the GPU), uncompiled
# at batch 1024 (80 % of the compiled rate; each run takes under a minute). COMPILE=1: compiled
# at batch 2048, the fastest single-GPU rate, but every run compiles again (2.5-4 minutes each)
gpu-*)
  nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
  step=(--batch-size 1024 --warmup 5 --set gan.compile=false --timeout 300)
  if [ "${COMPILE:-0}" = 1 ]; then step=(--batch-size 2048 --warmup 10 --timeout 900); fi
  case $1 in
    gpu-allreduce) run=(--modes allreduce --np 2) ;;  # one process per GPU (N = 1: the framework row)
    gpu-ps) run=(--modes downpour,easgd,gem --np 3) ;;  # 1 master + 2 workers; the master shares a GPU
    *) echo "usage: bash benchmarks/scaling_bench.sh cpu|gpu|gpu-allreduce|gpu-ps" >&2; exit 2 ;;
  esac
  python -m scaletrain bench scaling --model 3dgan "${run[@]}" --device cuda --precision bf16 \
    --steps 30 "${step[@]}" ${MPIEXEC:-} --out "$OUT/$1" 2>&1 | tee "$OUT/$1.log" ;;
*) echo "usage: bash benchmarks/scaling_bench.sh cpu|gpu|gpu-allreduce|gpu-ps" >&2; exit 2 ;;
esac
