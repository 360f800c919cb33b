import time

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
if comm.rank == 1:
    buf = np.zeros(1, np.int64)
    req = comm.Irecv(buf, source=0, tag=105)
    n = 100000
    t = time.perf_counter()
    for _ in range(n):
        req.Test()
    print(f"Test of a pending receive: {(time.perf_counter() - t) / n * 1e6:.2f} us", flush=True)
    req.Cancel()
    req.Free()
comm.Barrier()
