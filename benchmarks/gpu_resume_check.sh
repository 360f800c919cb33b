#!/usr/bin/env bash
# On a GPU machine: a 3DGAN run in each mode stopped by SIGTERM (as a batch system's time
# limit stops it) and resumed with --resume, on the GPU; prints each step's exit codes and the
# steps reached. Usage: bash benchmarks/gpu_resume_check.sh [MODE ...]
#   MODE: single | allreduce | downpour | gem   (default: all four; several processes share
#   the GPUs there are). STOP_AFTER: seconds from the run's first logged metrics to the
#   SIGTERM (default 5); SIGNAL_TO: rank (default) or launcher (see below); CONFIG,
#   PRECISION, N (showers), EPOCHS: another run (a CPU check: CONFIG=configs/demo.yaml
#   PRECISION=fp32 N=300 EPOCHS=3 STOP_AFTER=1).
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # root on the GPU machine
DATA=${DATA:-/tmp/resume_check}; EPOCHS=${EPOCHS:-12}
st="python -m scaletrain"
[ -d "$DATA/train" ] || $st data simulate --out "$DATA/train" --n "${N:-4000}" --energies 2:500 \
  --seed 0 --workers 8 --no-progress
common=("${CONFIG:-configs/3dgan.yaml}" --epochs "$EPOCHS" --set "run.precision=${PRECISION:-bf16}"
  --set gan.compile=false --set "data.path=$DATA/train" --set train.progress=false
  --set train.fidelity_every=0)
modes=("$@"); [ $# -gt 0 ] || modes=(single allreduce downpour gem)
for m in "${modes[@]}"; do
  case $m in
    single) args=() ;;
    allreduce) args=(--mode allreduce --np 2) ;;
    downpour | gem) args=(--mode "$m" --np 3) ;;
    *) echo "unknown mode $m"; exit 2 ;;
  esac
  dir=$DATA/runs/$m
  rm -rf "$dir"  # its metrics tell when the new run has started
  $st train "${common[@]}" "${args[@]}" --run-dir "$dir" --overwrite > "$DATA/$m.first.log" 2>&1 &
  pid=$!
  # once the run has logged its first metrics, the signal a batch system sends at its time
  # limit: to one rank (srun signals every task; one is enough), or SIGNAL_TO=launcher to
  # the command itself (Open MPI's mpirun then kills its processes within seconds)
  for _ in $(seq 600); do [ -s "$dir/metrics.jsonl" ] && break; sleep 0.5; done
  sleep "${STOP_AFTER:-5}"
  if [ "${SIGNAL_TO:-rank}" = launcher ] || [ ${#args[@]} -eq 0 ]; then
    kill -TERM "$pid"
  else
    pkill -TERM -n -f "scaletrain train.*--run-dir $dir"  # the newest: a rank
  fi
  wait "$pid"
  first=$?
  stopped=$(ls "$dir"/ckpt-*.pt 2>/dev/null | sort | tail -n 1)
  $st train "${common[@]}" "${args[@]}" --run-dir "$dir" --resume > "$DATA/$m.resume.log" 2>&1
  second=$?
  last=$(ls "$dir"/ckpt-*.pt 2>/dev/null | sort | tail -n 1)
  echo "$m: stopped with exit $first at ${stopped##*/}; resumed: exit $second, last" \
    "checkpoint ${last##*/} (epochs $EPOCHS)"
  grep -h "stopped by\|Error" "$DATA/$m.first.log" "$DATA/$m.resume.log" | head -n 5
done
