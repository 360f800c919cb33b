"""The fast 3DGAN training step as a self-contained loop for `bench train`.

The losses are tasks/fast_gan.FastGanLosses, the same that `scaletrain train` uses on a GPU
(gan.fast_path); this class adds its own optimizers (foreach updates: a few kernels for all
parameters) so that the benchmark times the step without the trainer around it. Data stay
on the device and losses are returned without a host synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import nn

from scaletrain.config import GanConfig, OptimConfig
from scaletrain.tasks.base import make_optimizer
from scaletrain.tasks.fast_gan import D_NAMES, G_NAMES, FastGanLosses

LOSS_NAMES = D_NAMES + G_NAMES


class FastGanStep:
    """step(real (B,1,25,25,25), energy (B,)) -> losses; one D update, then the G updates."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        cfg: GanConfig | None = None,
        optim: OptimConfig | None = None,
        *,
        precision: str = "bf16",
        compile: bool = True,
        channels_last: bool = True,
        fast_generator: bool = True,
        d_convs: str | Sequence[str] = "auto",
    ) -> None:
        self.cfg = cfg or GanConfig()
        optim = optim or OptimConfig()
        self.discriminator = discriminator
        device = next(generator.parameters()).device
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
        self.losses = FastGanLosses(
            generator, discriminator, self.cfg, autocast, compile=compile,
            channels_last=channels_last, fast_generator=fast_generator, d_convs=d_convs,
        )  # fmt: skip
        self.opt_g = make_optimizer(optim, generator.parameters())
        self.opt_d = make_optimizer(optim, discriminator.parameters())
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["foreach"] = True

    def step(self, real: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """Losses (d_loss, d_bce, d_energy_mape, g_loss, g_bce, g_ecal_mape), on the device."""
        if self.cfg.image_scale != 1.0:
            real = real * self.cfg.image_scale
        d = self.losses.d_loss(real, energy)
        self.opt_d.zero_grad(set_to_none=True)
        d[0].backward()
        self.opt_d.step()
        self.discriminator.requires_grad_(False)
        try:
            for _ in range(self.cfg.generator_steps):
                g = self.losses.g_loss(real.shape[0])
                self.opt_g.zero_grad(set_to_none=True)
                g[0].backward()
                self.opt_g.step()
        finally:
            self.discriminator.requires_grad_(True)
        return torch.cat([d.detach(), g.detach()])
