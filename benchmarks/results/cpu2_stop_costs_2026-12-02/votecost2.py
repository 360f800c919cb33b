import statistics
import time

import numpy as np
import torch
from mpi4py import MPI

comm = MPI.COMM_WORLD
x = torch.randn(256, 256)


def step():
    t = time.perf_counter()
    while time.perf_counter() - t < 0.005:
        x @ x


a = np.zeros(1, np.int32)
b = np.zeros(1, np.int32)


def run(kind):
    costs = []
    req = None
    for _ in range(800):
        step()
        t = time.perf_counter()
        if kind == "blocking":
            comm.Allreduce(a, b, op=MPI.MAX)
        elif kind == "iwait":
            if req is not None:
                req.Wait()
            req = comm.Iallreduce(a, b, op=MPI.MAX)
        elif kind == "itest":
            if req is not None:
                while not req.Test():
                    time.sleep(0)
            req = comm.Iallreduce(a, b, op=MPI.MAX)
        elif kind == "itest_nosleep":
            if req is not None:
                while not req.Test():
                    pass
            req = comm.Iallreduce(a, b, op=MPI.MAX)
        costs.append(time.perf_counter() - t)
    if req is not None:
        req.Wait()
    c = sorted(costs[100:])
    if comm.rank == 0:
        print(
            f"{kind:14s} median {statistics.median(c) * 1e6:7.1f} us  "
            f"mean {statistics.fmean(c) * 1e6:7.1f} us",
            flush=True,
        )


for k in ["blocking", "iwait", "itest", "itest_nosleep", "blocking"]:
    comm.Barrier()
    run(k)
