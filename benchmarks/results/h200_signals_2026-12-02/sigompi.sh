#!/usr/bin/env bash
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
env | grep OMPI_MCA
cat > /tmp/sig.py <<'PY'
import signal, sys, time, os
from mpi4py import MPI
r = MPI.COMM_WORLD.Get_rank(); t0 = time.time()
def h(s, f):
    print(f"rank {r} got {signal.Signals(s).name} at {time.time()-t0:.2f}", flush=True)
for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(s, h)
while time.time() - t0 < 15:
    time.sleep(0.5); print(f"rank {r} alive {time.time()-t0:.1f}", flush=True) if int((time.time()-t0)*2) % 6 == 0 else None
print(f"rank {r} exit", flush=True)
PY
for sig in USR1 TERM; do
  mpirun -n 2 --oversubscribe python /tmp/sig.py > /tmp/$sig.log 2>&1 & p=$!
  sleep 3; kill -$sig $p; wait $p; echo "== $sig: mpirun exit $?"; grep -v "^rank . alive" /tmp/$sig.log | head; grep "alive" /tmp/$sig.log | tail -2
done
