#!/usr/bin/env bash
# The GPU study of docs/physics.md: train the published 3DGAN on simulated showers with one
# process and with several, then generate and validate each against an independent sample.
# Usage on the GPU machine: OUT=dir EPOCHS=5 bash benchmarks/physics_study.sh RUN [RUN ...]
#   RUN: single | allreduce | allreduce-scaled | allreduce-warm5 | allreduce-sqrt | downpour
#   | easgd | gem | gem-kappa1 | gem-mu0 | gem-mu05 (all but single: several processes; one
#   GPU each on a machine with enough),
#   or RUN:SEED (e.g. single:1): that run with run.seed=SEED (its initial weights, the order
#   of its batches and its train/validation split), named RUN-sSEED
# Table and figure: python benchmarks/study_summary.py DIR RUN... on the unpacked archive(s).
# TRAIN_ONLY=1 trains (and archives the logs) without generating and validating: the first
# job of a study that goes on with RESUME=1.
# Every run has a time limit (LIMIT seconds): `timeout` sends SIGTERM, the run stops after its
# step with a checkpoint (exit code 75), and its best.pt (the best finished epoch) is then
# generated from and validated like a finished run's. PARALLEL=1 starts
# the runs at once (they share the GPUs), each archived under OUT/RUN. GPU_<run>=LIST (e.g.
# GPU_single=1; '-' in a run's name becomes '_') shows that run only those GPUs.
# A study longer than one job: each run leaves OUT/RUN.state.tgz after its training (its last
# checkpoint, best.pt, config and metrics; OUT/RUN/RUN.state.tgz with PARALLEL=1). Start again
# with RESUME=1 and a larger EPOCHS: a run whose directory holds a checkpoint continues from
# it. On a fresh machine, STATE=DIR with RESUME=1 (the archives brought back, in either
# layout) unpacks each run's archive into its empty directory first; the data are simulated
# again from the same seeds, so they are the same showers.
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # root on the GPU machine
OUT=${OUT:-study_out}; DATA=${DATA:-/tmp/study}; N=${N:-55000}; EPOCHS=${EPOCHS:-5}
REF_N=${REF_N:-10000}  # reference showers, and as many generated
BATCH=${BATCH:-128}; LIMIT=${LIMIT:-400}; WORKERS=${WORKERS:-14}  # CONFIG: another config
st="python -m scaletrain"
LOG=${LOG:-$DATA/out}  # what the archive holds
mkdir -p "$OUT" "$LOG"
[ -d "$DATA/train" ] || $st data simulate --out "$DATA/train" --n "$N" --energies 2:500 \
  --seed 0 --workers "$WORKERS" --no-progress
[ -d "$DATA/ref" ] || $st data simulate --out "$DATA/ref" --n "$REF_N" --energies 10:500 \
  --seed 1 --workers "$WORKERS" --shard-size "$REF_N" --no-progress
if [ "${PARALLEL:-0}" = 1 ] && [ $# -gt 1 ]; then
  for spec in "$@"; do
    name=${spec//:/-s}
    PARALLEL=0 OUT="$OUT/$name" LOG="$LOG/$name" bash "$0" "$spec" > "$LOG/$name.script.log" 2>&1 &
  done
  wait
  for spec in "$@"; do cat "$LOG/${spec//:/-s}.script.log"; done
  exit 0
fi
common=("${CONFIG:-configs/3dgan.yaml}" --epochs "$EPOCHS" --set "run.precision=${PRECISION:-bf16}"
  --set "data.path=$DATA/train" --set "train.batch_size=$BATCH" --set train.fidelity_every=1
  --set train.fidelity_showers=2000 --set train.progress=false --set gan.compile=false
  --set train.log_every=100)
for spec in "$@"; do
  run=${spec%%:*}; name=${spec//:/-s}; seed=()
  if [ "$spec" != "$run" ]; then seed=(--set "run.seed=${spec#*:}"); fi
  dir="${RUNS:-$DATA/runs}/$name"
  start=--overwrite
  if [ -n "${STATE:-}" ] && [ "${RESUME:-0}" = 1 ] && ! compgen -G "$dir/ckpt-*.pt" > /dev/null
  then
    for state in "$STATE/$name.state.tgz" "$STATE/$name/$name.state.tgz"; do
      [ -f "$state" ] || continue
      mkdir -p "$dir" && tar -C "$dir" -xzf "$state" && echo "$name: state from $state"
      break
    done
  fi
  if [ "${RESUME:-0}" = 1 ] && compgen -G "$dir/ckpt-*.pt" > /dev/null; then start=--resume; fi
  case $run in
    single) args=() ;;
    allreduce) args=(--mode allreduce --np 2) ;;
    allreduce-scaled) args=(--mode allreduce --np 2 --set parallel.lr_scaling=linear
      --set parallel.warmup_epochs=1) ;;
    allreduce-warm5) args=(--mode allreduce --np 2 --set parallel.lr_scaling=linear
      --set parallel.warmup_epochs=5) ;;  # seed 001's warm-up
    allreduce-sqrt) args=(--mode allreduce --np 2 --set parallel.lr_scaling=sqrt
      --set parallel.warmup_epochs=1) ;;
    downpour) args=(--mode downpour --np 3) ;;
    easgd) args=(--mode easgd --np 3) ;;
    gem) args=(--mode gem --np 3) ;;  # the workers keep the recipe's RMSprop (momentum 0)
    gem-kappa1) args=(--mode gem --np 3 --set parallel.gem_kappa=1) ;;
    # a proxy of less momentum: the centre's energy matched to RMSprop's own (mu 0)
    gem-mu0) args=(--mode gem --np 3 --set parallel.gem_momentum=0 --set parallel.gem_kappa=1) ;;
    gem-mu05) args=(--mode gem --np 3 --set parallel.gem_momentum=0.5
      --set parallel.gem_kappa=1) ;;
    *) echo "unknown run $run"; exit 2 ;;
  esac
  gpus="GPU_${run//-/_}"
  if [ -n "${!gpus:-}" ]; then export CUDA_VISIBLE_DEVICES=${!gpus}; fi
  t0=$(date +%s)
  timeout --preserve-status "$LIMIT" $st train "${common[@]}" "${args[@]}" "${seed[@]}" \
    --run-dir "$dir" "$start" >> "$LOG/$name.train.log" 2>&1
  echo "$name: train ($start) exit $? after $(( $(date +%s) - t0 )) s"
  if [ -f "$dir/metrics.jsonl" ]; then
    cp "$dir/metrics.jsonl" "$LOG/$name.metrics.jsonl"
    python benchmarks/study_summary.py --epochs "$dir/metrics.jsonl"
  fi
  last=$(compgen -G "$dir/ckpt-*.pt" | sort | tail -n 1)
  if [ -n "$last" ]; then  # what a later job needs to go on (best.pt may be a hard link to it)
    keep=()
    for f in config.yaml provenance.json metrics.jsonl best.pt "$(basename "$last")"; do
      [ -e "$dir/$f" ] && keep+=("$f")  # a run stopped early may not have them all yet
    done
    tar -C "$dir" -czf "$OUT/$name.state.tgz" "${keep[@]}"
  fi
  if [ "${TRAIN_ONLY:-0}" = 1 ]; then continue; fi
  $st generate "$dir/best.pt" --out "$dir/generated.h5" --n "$REF_N" --energies 10:500 \
    --seed 2 --no-fast --overwrite > "$LOG/$name.generate.log" 2>&1
  $st validate "$dir/generated.h5" --reference "$DATA/ref/showers_000.h5" \
    --report "$dir/report" --overwrite > "$LOG/$name.validate.log" 2>&1
  tail -n 25 "$LOG/$name.validate.log"
  cp "$dir/report/scores.json" "$LOG/$name.scores.json"
  tar -C "$dir" -czf "$LOG/$name.report.tgz" report
done
# one archive: the logs, metrics and report of every run
names="$*"; names=${names//:/-s}
tar -C "$LOG" -czf "$OUT/study-${names// /_}.tgz" .
