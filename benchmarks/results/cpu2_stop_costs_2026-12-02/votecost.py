"""Cost of StopVote per step: 2 processes, a 5 ms busy 'step' between votes."""

import statistics
import time

import torch
from mpi4py import MPI

from scaletrain.parallel.stopvote import StopVote

comm = MPI.COMM_WORLD
vote = StopVote(comm, 60)
x = torch.randn(256, 256)


def step():
    t = time.perf_counter()
    while time.perf_counter() - t < 0.005:
        x @ x


costs = []
for _ in range(1500):
    step()
    t = time.perf_counter()
    vote(False)
    costs.append(time.perf_counter() - t)
vote.close()
c = sorted(costs[100:])
if comm.rank == 0:
    print(
        f"vote: median {statistics.median(c) * 1e6:.1f} us, "
        f"p90 {c[int(0.9 * len(c))] * 1e6:.1f} us, mean {statistics.fmean(c) * 1e6:.1f} us"
    )
