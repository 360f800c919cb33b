"""Samples/s of the fast 3DGAN training step in several variants, one GPU.

Usage: PYTHONPATH=src python benchmarks/step_variants.py BATCH VARIANT [VARIANT ...]
VARIANT: ALGOS[+compile], ALGOS one of auto, cudnn, zsplit, fft, unfold2d or four of them
joined by "," (one per discriminator convolution), e.g. auto+compile or cudnn,zsplit,fft,fft
"""

from __future__ import annotations

import sys
import time

import torch

from scaletrain.bench.fast_train import FastGanStep
from scaletrain.bench.train_speed import synthetic_showers
from scaletrain.models.threedgan import build_3dgan


def _convs(spec: str) -> str | tuple[str, ...]:
    return tuple(spec.split(",")) if "," in spec else spec


def main() -> None:
    batch = int(sys.argv[1])
    dev = torch.device("cuda")
    images, energy = synthetic_showers(batch * 4, dev)
    images = images.unsqueeze(1)
    for variant in sys.argv[2:]:
        torch.manual_seed(0)
        models = {k: m.to(dev) for k, m in build_3dgan().items()}
        step = FastGanStep(
            models["generator"], models["discriminator"],
            compile=variant.endswith("+compile"), d_convs=_convs(variant.split("+")[0]),
        )  # fmt: skip
        t0 = time.perf_counter()
        for i in range(3):
            step.step(images[i * batch : (i + 1) * batch], energy[i * batch : (i + 1) * batch])
        torch.cuda.synchronize()
        warm = time.perf_counter() - t0
        iters = 8
        t0 = time.perf_counter()
        for i in range(iters):
            j = i % 4
            losses = step.step(
                images[j * batch : (j + 1) * batch], energy[j * batch : (j + 1) * batch]
            )
        torch.cuda.synchronize()
        sec = (time.perf_counter() - t0) / iters
        mem = torch.cuda.max_memory_allocated() / 2**30
        print(
            f"{variant:16s} batch {batch}: {batch / sec:8.1f} samples/s, {1e3 * sec:7.1f} ms/step,"
            f" warm-up {warm:5.1f} s, peak {mem:5.1f} GiB, losses {losses.tolist()}",
            flush=True,
        )
        torch.cuda.reset_peak_memory_stats()


if __name__ == "__main__":
    main()
