#!/usr/bin/env bash
# On a GPU machine: model parallel (--mode pipeline) and the GAN under EASGD and GEM, on the
# GPU(s) there are (processes beyond the GPUs share them; pipeline stages sharing one GPU pass
# their tensors over Gloo through the host).
# 1. The pipelined tiny 3DGAN's losses, gradients and checkpoint state against the unsplit
#    model's on the GPU: tests/parallel/_pipeline_equivalence.py with DEVICE=cuda, 2 stages.
# 2. The published 3DGAN for EPOCHS epochs with one process and with 2 pipeline stages of
#    MICRO micro-batches, in fp32 and bf16; then easgd and gem (1 master + 2 workers), bf16.
# Each run's log and metrics land in OUT. Usage: OUT=dir bash benchmarks/gpu_pipeline_check.sh
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # root on the GPU machine
OUT=${OUT:-pipeline_out}; DATA=${DATA:-/tmp/pipeline_check}; EPOCHS=${EPOCHS:-2}
st="python -m scaletrain"
mkdir -p "$OUT"
DEVICE=cuda timeout 300 mpirun -n 2 python tests/parallel/_pipeline_equivalence.py \
  "$OUT/equivalence.json" > "$OUT/equivalence.log" 2>&1
echo "equivalence (2 stages, cuda): exit $?"
[ -d "$DATA/train" ] || $st data simulate --out "$DATA/train" --n "${N:-4000}" --energies 2:500 \
  --seed 0 --workers 8 --no-progress
common=(configs/3dgan.yaml --epochs "$EPOCHS" --set "data.path=$DATA/train"
  --set train.progress=false --set gan.compile=false --set train.fidelity_every=0
  --set train.log_every=10)
run() {  # NAME PRECISION ARGS...
  local name=$1 precision=$2; shift 2
  local dir=$DATA/runs/$name-$precision
  timeout 300 $st train "${common[@]}" --set "run.precision=$precision" "$@" --run-dir "$dir" \
    --overwrite > "$OUT/$name-$precision.log" 2>&1
  echo "$name $precision: exit $?"
  cp "$dir/metrics.jsonl" "$OUT/$name-$precision.metrics.jsonl" 2>/dev/null
  tail -n 4 "$OUT/$name-$precision.log"
}
for precision in fp32 bf16; do
  run single "$precision"
  run pipeline "$precision" --mode pipeline --np 2 --set "parallel.microbatches=${MICRO:-4}"
done
run easgd bf16 --mode easgd --np 3
run gem bf16 --mode gem --np 3  # RMSprop, as the recipe: plain SGD cannot train the 3DGAN
