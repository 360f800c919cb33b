"""Where the fast 3DGAN training step spends its GPU time: a torch.profiler kernel table.

Usage: PYTHONPATH=src python benchmarks/profile_train_step.py [batch] [--compile] [--fft]
"""

from __future__ import annotations

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from scaletrain.bench.fast_train import FastGanStep
from scaletrain.bench.train_speed import synthetic_showers
from scaletrain.models.threedgan import build_3dgan


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    batch = int(args[0]) if args else 1024
    dev = torch.device("cuda")
    torch.manual_seed(0)
    models = {k: m.to(dev) for k, m in build_3dgan().items()}
    kwargs = {"d_convs": "fft"} if "--fft" in sys.argv else {}
    step = FastGanStep(
        models["generator"], models["discriminator"], compile="--compile" in sys.argv, **kwargs
    )
    images, energy = synthetic_showers(batch, dev)
    images = images.unsqueeze(1)
    for _ in range(3):
        step.step(images, energy)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            step.step(images, energy)
        torch.cuda.synchronize()
    print(
        prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=90)
    )


if __name__ == "__main__":
    main()
