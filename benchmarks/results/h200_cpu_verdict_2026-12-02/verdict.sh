#!/usr/bin/env bash
# Back-to-back invocations of the interleaved CPU scaling benchmark on a 16-core host.
# usage (repo root): SRC=<copy of the code measured> bash verdict.sh v1   -> v1a, v1b, ...
# Starts no new invocation after LAST_START s; every invocation is stopped at LIMIT s
# (timeout, SIGTERM to its process group) so the command ends inside the call's limit.
# Finished invocations: $NAME.md / $NAME.json; a stopped one: its per-run rank records
# (the benchmark's temp dir) under $NAME.partial/. All of it goes into $OUT/$P.tar, the
# console logs to $OUT/$NAME.log (the device returns at most 8 files).
set -u
P=${1:?prefix, e.g. v1}
LIMIT=${LIMIT:-565}; LAST_START=${LAST_START:-380}
export PYTHONPATH=$SRC/src PYTHONUNBUFFERED=1 OMPI_ALLOW_RUN_AS_ROOT=1 \
  OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_hwloc_base_binding_policy=none
T0=$SECONDS
KEEP=/tmp/keep_$P; rm -rf $KEEP; mkdir -p $KEEP
cp $SRC/COMMIT $KEEP/COMMIT
nproc; uptime; date -u
echo "commit $(cat $SRC/COMMIT)"
env | grep -E '^(NCCL|TORCH_SYMM|NVSHMEM|OMPI)' | sort
top -bn1 -o %CPU | head -15
for L in a b c d e f g h; do
  el=$((SECONDS - T0))
  if [ $el -ge $LAST_START ]; then echo "== no new invocation at ${el}s"; break; fi
  NAME=$P$L; rem=$((LIMIT - el))
  echo "== $NAME start at ${el}s (allowed ${rem}s)"; date -u; uptime
  rm -rf /tmp/$NAME /tmp/scaling-*
  timeout -s TERM -k 10 $rem python -m scaletrain bench scaling --modes downpour,easgd,gem --np 2,3 \
    --model mlp --batch-size 256 --steps 600 --warmup 5 --device cpu --threads 1 --precision fp32 \
    --repeats 1 --interleave 50 --mpiexec mpirun --mpiexec-args=--oversubscribe \
    --out /tmp/$NAME > $OUT/$NAME.log 2>&1
  rc=$?
  echo "== $NAME exit $rc after $((SECONDS - T0 - el))s"; date -u; uptime
  grep -a "N=" $OUT/$NAME.log | grep -av "│"
  if [ $rc -eq 0 ] && [ -f /tmp/$NAME/scaling.json ]; then
    cp /tmp/$NAME/scaling.md $KEEP/$NAME.md; cp /tmp/$NAME/scaling.json $KEEP/$NAME.json
  else
    mkdir -p $KEEP/$NAME.partial
    for d in /tmp/scaling-*; do [ -d "$d" ] && cp "$d"/*.json $KEEP/$NAME.partial/ 2>/dev/null; done
    cp -r /tmp/$NAME/logs $KEEP/$NAME.partial/logs 2>/dev/null
    echo "rc $rc" > $KEEP/$NAME.partial/RC
  fi
  tar -cf $OUT/$P.tar.tmp -C $KEEP . && mv $OUT/$P.tar.tmp $OUT/$P.tar
done
top -bn1 -o %CPU | head -12
echo "== done at $((SECONDS - T0))s"; ls -la $OUT
