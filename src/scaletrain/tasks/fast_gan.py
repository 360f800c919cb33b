"""The 3DGAN step built for GPUs: the same losses as tasks/gan.py, computed faster.

What differs from `GanTask`'s step, and why:
- the generator runs as FastGenerator (an exact re-expression with a third of the FLOPs;
  gradients reach the original parameters through the weight maps);
- the discriminator's inputs in channels-last 3-D layout, cuDNN's fastest for its bf16
  convolutions (the weights stay as they are: other code holds views of their storage),
  and its convolutions with few input channels computed as 2-D ones (models/unfold_conv.py,
  `d_convs="auto"`);
- each loss (forward and, through AOTAutograd, its backward) optionally compiled by
  torch.compile with static shapes: batch norm, dropout and LeakyReLU fuse there;
- random numbers come from the device's generator, so the step never waits for the host.

`FastGanTask` is a `GanTask` whose `train_step` uses these losses; everything else
(evaluation, generation, checkpoints) is GanTask's. The trainer's `update` still does
backward, the distribution strategy's hook and the optimizer step, so every parallel mode
works with it. Random draws differ from GanTask's (device generator, not the task's), so
the two paths agree statistically, not bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from scaletrain.config import GanConfig
from scaletrain.models.fast_discriminator import FastDiscriminator
from scaletrain.models.fast_generator import FastGenerator, supports
from scaletrain.tasks.gan import (
    D_NAMES,
    G_NAMES,
    GanTask,
    discriminator_losses,
    generator_losses,
)


class FastGanLosses:
    """d_loss(real, energy) and g_loss(n), each a stacked tensor (total, bce, mape)."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        cfg: GanConfig,
        autocast: AbstractContextManager | None = None,
        *,
        compile: bool = True,
        channels_last: bool = True,
        fast_generator: bool = True,
        d_convs: str | Sequence[str] = "auto",
    ) -> None:
        self.cfg = cfg
        self.device = next(generator.parameters()).device
        self.autocast = autocast if autocast is not None else nullcontext()
        # only the images go channels-last: cuDNN then runs the whole discriminator in that
        # layout. The weights keep their storage, which parameter servers alias (FlatState).
        self.channels_last = channels_last
        self.generator = FastGenerator(generator) if fast_generator else generator
        self.discriminator = (
            discriminator
            if d_convs == "cudnn" or not hasattr(discriminator, "features")  # wrapped: as is
            else FastDiscriminator(discriminator, d_convs, channels_last=channels_last)
        )
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        wrap = (lambda f: torch.compile(f, dynamic=False)) if compile else (lambda f: f)
        self.d_loss = wrap(self._d_loss)
        self.g_loss = wrap(self._g_loss)

    def _latent(self, energy: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(energy.shape[0], self.cfg.latent_size, device=energy.device)
        return noise * (energy * self.cfg.energy_scale).unsqueeze(1)

    def _energies(self, n: int) -> torch.Tensor:
        lo, hi = self.cfg.gen_energy_range
        return lo + (hi - lo) * torch.rand(n, device=self.device)

    def _labels(self, value: float, n: int) -> torch.Tensor:
        labels = torch.full((n,), value, device=self.device)
        flip = torch.rand(n, device=self.device) < self.cfg.label_flip
        return torch.where(flip, 1.0 - labels, labels)

    def _image(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x

    def _d_loss(self, real: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        n = real.shape[0]
        fake_energy = self._energies(n)
        with self.autocast:
            with torch.no_grad():
                fake = self.generator(self._latent(fake_energy))
            on_real = self.discriminator(self._image(real))
            on_fake = self.discriminator(self._image(fake.detach()))
        labels = self._labels(1.0, n), self._labels(0.0, n)
        losses = discriminator_losses(self.cfg, on_real, on_fake, energy, fake_energy, labels)
        return torch.stack(losses)

    def _g_loss(self, n: int) -> torch.Tensor:
        energy = self._energies(n)
        with self.autocast:
            fake = self.generator(self._latent(energy))
            judged = self.discriminator(self._image(fake))
        return torch.stack(generator_losses(self.cfg, judged, fake, energy))


class FastGanTask(GanTask):
    """GanTask with the fast training step (gan.fast_path); see the module docstring."""

    _losses: FastGanLosses | None = None
    _plain = False  # the strategy replaced the generator by something FastGenerator can't run

    def _fast(self) -> FastGanLosses | None:
        # built at the first step, not with the task: the distribution strategy may still
        # replace modules (SyncBatchNorm, pipeline stages) after the task is made
        if self._losses is None and not self._plain:
            self.generator = self.models["generator"]
            self.discriminator = self.models["discriminator"]
            if not supports(self.generator):
                self._plain = True
                return None
            self._losses = FastGanLosses(
                self.generator, self.discriminator, self.cfg, self.autocast,
                compile=self.cfg.compile and self.device.type == "cuda",
            )  # fmt: skip
        return self._losses

    def _train_losses(self) -> tuple[Callable[..., dict], Callable[..., dict]]:
        fast = self._fast()
        if fast is None:
            return super()._train_losses()
        # GanTask's step loop, fed with the fast losses under GanTask's names
        return (
            lambda real, energy: dict(zip(D_NAMES, fast.d_loss(real, energy), strict=True)),
            lambda n: dict(zip(G_NAMES, fast.g_loss(n), strict=True)),
        )


def use_fast_path(cfg: GanConfig, models: dict[str, nn.Module], device: torch.device) -> bool:
    """gan.fast_path: on, off, or auto (on for the 3DGAN on a GPU)."""
    if cfg.fast_path == "auto":
        return device.type == "cuda" and supports(models.get("generator"))
    if cfg.fast_path == "on" and not supports(models.get("generator")):
        from scaletrain.errors import ConfigError

        raise ConfigError(
            "gan.fast_path: on needs the 3DGAN generator (model.name: 3dgan); "
            "set gan.fast_path: auto or off for this model"
        )
    return cfg.fast_path == "on"
