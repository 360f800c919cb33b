"""Floating-point operation counts of the 3DGAN, the basis of the TFLOP/s in the benchmarks.

Counts come from torch's FlopCounterMode (2 FLOP per multiply-add of convolutions and
matrix products; element-wise work is not counted). Training uses the usual rule that a
backward pass costs twice its forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def forward_flops(fn: Callable[..., object], *args: torch.Tensor) -> int:
    """FLOPs of one call of fn(*args) (convolutions and matrix products)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


def generator_flops(generator: nn.Module) -> int:
    """FLOPs per shower of a generator's forward pass (batch of one, on its device)."""
    ref = next(generator.parameters())
    latent = torch.zeros(1, generator.latent_size, device=ref.device, dtype=ref.dtype)
    return forward_flops(generator, latent)


def discriminator_flops(discriminator: nn.Module) -> int:
    ref = next(discriminator.parameters())
    image = torch.zeros(1, 1, 25, 25, 25, device=ref.device, dtype=ref.dtype)
    return forward_flops(discriminator, image)


def train_flops_per_sample(g_fwd: float, d_fwd: float, generator_steps: int = 2) -> float:
    """One 3DGAN step per real sample: a D update, then `generator_steps` G updates.

    D update: G forward (no grad) + D forward and backward on a real and a fake sample
    (3 x 2 x D). Each G update: forward and backward through G and D (3 x (G + D)); the
    D backward there needs only input gradients, so this slightly over-counts, as the
    published figure (about 22 GFLOP) does.
    """
    return g_fwd + 6 * d_fwd + generator_steps * 3 * (g_fwd + d_fwd)
