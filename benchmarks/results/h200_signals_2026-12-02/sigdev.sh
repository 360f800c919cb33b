#!/usr/bin/env bash
# Open MPI's mpirun and the stop signals: SIGUSR1 and SIGTERM to mpirun, all-reduce and downpour
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_hwloc_base_binding_policy=none
mpirun --version | head -1
python - <<'PY'
from scaletrain.config import load_config, save_config
from scaletrain.data.synthetic import write_classification
d = write_classification("/tmp/stopdata", 4000, shards=2, seed=0)
o = ["run.dir=/tmp/stoprun", "run.device=cpu", "run.threads=1", f"data.path={d}",
     "data.val_fraction=0.25", "model.name=mlp", "model.args={in_features: 32, hidden: [64]}",
     "task=supervised", "supervised.target=pdg", "train.epochs=400", "train.batch_size=32",
     "train.progress=false"]
save_config(load_config(None, o), "/tmp/stopcfg.yaml")
PY
one() {  # name signal mode n
  rm -rf /tmp/stoprun
  mpirun -n $4 --oversubscribe python -m scaletrain train /tmp/stopcfg.yaml --mode $3 > $OUT/$1.log 2>&1 &
  p=$!
  for i in $(seq 1 300); do grep -q '"kind": "epoch"' /tmp/stoprun/metrics.jsonl 2>/dev/null && break; sleep 0.1; done
  sleep 1
  t0=$(date +%s.%N); kill -$2 $p; wait $p; rc=$?; t1=$(date +%s.%N)
  echo "$1: kill -$2 mpirun ($3, $4 processes): exit $rc after $(python -c "print(round($t1-$t0,2))") s; checkpoints: $(ls /tmp/stoprun | grep ckpt | tr '\n' ' ')"
  grep -E "stopped by|trained|error|Killed|signal" $OUT/$1.log | head -5
  if [ "$rc" = 75 ]; then
    mpirun -n $4 --oversubscribe python -m scaletrain train /tmp/stopcfg.yaml --mode $3 --resume --epochs 30 > $OUT/$1.resume.log 2>&1
    echo "  resume: exit $? $(grep trained $OUT/$1.resume.log)"
  fi
}
one ar_usr1 USR1 allreduce 2
one ar_term TERM allreduce 2
one dp_usr1 USR1 downpour 3
one dp_term TERM downpour 3
