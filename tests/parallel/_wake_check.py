"""Run under mpiexec -n 2: rank 1 is a client of server rank 0, which answers its first
exchange and then goes silent (as a server that failed its trial and went on). Each of the
client's later exchanges waits on a thread, for the reply (`wait` spin or sleep) or, by
messages, also for its payload to leave, until the client wakes it. Rank 1 writes what it
saw to argv[1] (JSON) and ends at once where a thread could not be woken (MPI_Finalize would
wait for it)."""

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from mpi4py import MPI

from scaletrain.parallel.messages import TAG_HEADER, TAG_PAYLOAD, TAG_REPLY, Client

comm = MPI.COMM_WORLD
SIZE = 1 << 16  # by messages too large to leave before the server receives it
if comm.rank == 0:
    header, payload = np.zeros(4, dtype=np.int64), torch.zeros(SIZE)
    comm.Recv(header, source=1, tag=TAG_HEADER)
    comm.Recv(payload.numpy(), source=1, tag=TAG_PAYLOAD)
    comm.Send((payload + 1).numpy(), dest=1, tag=TAG_REPLY)
    comm.Barrier()  # the client is done; its later exchanges were never answered
    for _ in range(2):  # their messages, taken in only now (MPI_Finalize wants none left)
        comm.Recv(header, source=1, tag=TAG_HEADER)
        comm.Recv(payload.numpy(), source=1, tag=TAG_PAYLOAD)
    comm.Barrier()
    sys.exit(0)

seen = {}
client = Client(comm, 1, 0, SIZE, timeout_s=1.0, slot=None, wakeable=True)
thread = ThreadPoolExecutor(1)
client.payload.fill_(2.0)
seen["answered"] = thread.submit(client.exchange, 0, 1, "spin").result(timeout=30)[0].item()
for wait in ("spin", "sleep"):
    waiting = thread.submit(client.exchange, 0, 2, wait)
    time.sleep(0.5)
    seen[f"{wait} waiting"] = not waiting.done()
    client.wake()
    try:
        error = waiting.exception(timeout=10)
    except TimeoutError:  # still waiting: report, and end without MPI_Finalize
        seen[f"{wait} woken"] = "not woken"
        with open(sys.argv[1], "w") as fh:
            json.dump(seen, fh)
        os._exit(1)
    seen[f"{wait} woken"] = str(error)
client.close()  # no wake-up receive left behind
comm.Barrier()
comm.Barrier()  # meanwhile the server takes the abandoned messages in
with open(sys.argv[1], "w") as fh:
    json.dump(seen, fh)
