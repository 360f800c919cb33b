"""Run under mpiexec -n 2: rank 1 is a client of server rank 0 on the same node. Rank 0
writes what it saw to argv[1] (JSON)."""

import json
import sys

import torch
from mpi4py import MPI

from scaletrain.parallel import shm

comm = MPI.COMM_WORLD
client = comm.rank == 1
seen = {}
for case in ("on", "off", "full"):
    if case == "full" and client:
        shm.has_room = lambda nbytes, where=None: False  # no room left for its slot
    slots = shm.NodeSlots(comm, 0 if client else -1, 5, enabled=case != "off")
    slot = slots.slot(1)  # the client's, seen from either side
    seen[case] = slot is not None
    if case == "on":
        if client:
            slot.payload.copy_(torch.arange(5.0))
            slot.publish()
        comm.Barrier()  # stands for the header
        if not client:
            slot.observe()
            seen["payload"] = slot.payload.tolist()
            torch.mul(slot.payload, 2, out=slot.reply)
            slot.publish()
        comm.Barrier()  # stands for the notice
        if client:
            slot.observe()
            seen["reply"] = slot.reply.tolist()
    slots.close()
seen = comm.gather(seen, root=0)
if comm.rank == 0:
    with open(sys.argv[1], "w") as fh:
        json.dump(seen, fh)
