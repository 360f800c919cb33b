"""N processes with batch b vs one process with batch N·b: the same weights after k steps.

mpiexec -n N python _allreduce_equivalence.py OUT.json
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

from scaletrain.config import ParallelConfig
from scaletrain.data.synthetic import make_classification
from scaletrain.models.small import MLP
from scaletrain.parallel import World, make_strategy

STEPS, BATCH = 6, 8


def build() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = MLP(32, 2, (16, 16))
    return model, torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.5)


def step(model, optimizer, x, y, after_backward=None) -> None:
    loss = F.cross_entropy(model(x)["logits"], y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if after_backward is not None:
        after_backward("model", model)
    optimizer.step()


def main() -> None:
    world = World.detect()
    n, rank = world.size, world.rank
    data = make_classification(STEPS * BATCH * n, seed=1)
    x = torch.from_numpy(data["ECAL"]).reshape(STEPS, n * BATCH, -1)
    y = torch.from_numpy((data["pdg"] == 211).astype("int64")).reshape(STEPS, n * BATCH)
    # tiny buckets: several all-reduces per backward, completed in after_backward
    strategy = make_strategy(ParallelConfig(mode="allreduce", bucket_mb=0.002), world)
    strategy.device("cpu")
    model, optimizer = build()
    if rank == 1:  # different initial weights on purpose: setup must broadcast rank 0's
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    strategy.setup({"model": model}, {"model": optimizer})
    buckets = len(strategy._syncs["model"].buckets)
    mine = slice(rank * BATCH, (rank + 1) * BATCH)
    for s in range(STEPS):
        step(model, optimizer, x[s, mine], y[s, mine], strategy.after_backward)
        strategy.end_step(s + 1)
    strategy.close()
    if rank == 0:
        reference, ref_optimizer = build()
        for s in range(STEPS):
            step(reference, ref_optimizer, x[s], y[s])
        diff = max(
            float((a - b).detach().abs().max())
            for a, b in zip(model.parameters(), reference.parameters(), strict=True)
        )
        moved = max(
            float((a - b).detach().abs().max())
            for a, b in zip(model.parameters(), build()[0].parameters(), strict=True)
        )
        out = {"max_diff": diff, "moved": moved, "buckets": buckets}
        with open(sys.argv[1], "w") as fh:
            json.dump(out, fh)


if __name__ == "__main__":
    main()
