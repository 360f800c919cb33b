"""The 3DGAN training step: one discriminator update, then the generator trained twice.

Losses as published: binary cross-entropy on real/fake (weight 6), mean absolute percentage
error of the discriminator's primary-energy estimate (0.2) and of the image's summed energy
(0.1). The generator's latent vector is Gaussian noise multiplied by Ep/100; 5 % of the
discriminator's labels are flipped.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scaletrain.config import GanConfig, OptimConfig
from scaletrain.tasks.base import Batch, Update, make_optimizer, mape

D_NAMES = ("d_loss", "d_bce", "d_energy_mape")
G_NAMES = ("g_loss", "g_bce", "g_ecal_mape")


def discriminator_losses(
    cfg: GanConfig,
    on_real: tuple[torch.Tensor, torch.Tensor],
    on_fake: tuple[torch.Tensor, torch.Tensor],
    energy: torch.Tensor,
    fake_energy: torch.Tensor,
    labels: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The discriminator's (loss, BCE, energy MAPE) (D_NAMES) from its (logit, energy)
    outputs on real and generated showers and the (real, fake) labels. The summed-energy term
    has no discriminator parameters: it only matters for the generator."""
    w_bce, w_ep, _ = cfg.loss_weights
    (real_logit, real_ep), (fake_logit, fake_ep) = on_real, on_fake
    bce = 0.5 * (
        F.binary_cross_entropy_with_logits(real_logit.float(), labels[0])
        + F.binary_cross_entropy_with_logits(fake_logit.float(), labels[1])
    )
    scale = cfg.energy_scale
    ep_err = 0.5 * (
        mape(real_ep.float(), energy * scale) + mape(fake_ep.float(), fake_energy * scale)
    )
    return w_bce * bce + w_ep * ep_err, bce, ep_err


def generator_losses(
    cfg: GanConfig,
    judged: tuple[torch.Tensor, torch.Tensor],
    fake: torch.Tensor,
    energy: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The generator's (loss, BCE, summed-energy MAPE) (G_NAMES) from the discriminator's
    (logit, energy) outputs on the showers `fake` generated for the primary `energy`."""
    w_bce, w_ep, w_ecal = cfg.loss_weights
    logit, ep = judged
    bce = F.binary_cross_entropy_with_logits(logit.float(), torch.ones_like(energy))
    ep_err = mape(ep.float(), energy * cfg.energy_scale)
    ecal_err = mape(fake.float().sum(dim=(1, 2, 3, 4)), expected_deposit(cfg, energy))
    return w_bce * bce + w_ep * ep_err + w_ecal * ecal_err, bce, ecal_err


def expected_deposit(cfg: GanConfig, energy_gev: torch.Tensor) -> torch.Tensor:
    """Summed image energy the generator should produce for a primary energy."""
    return cfg.sampling_fraction * energy_gev * cfg.image_scale


class GanTask:
    def __init__(
        self,
        cfg: GanConfig,
        optim: OptimConfig,
        models: dict[str, nn.Module],
        device: torch.device,
        autocast: AbstractContextManager | None = None,
        seed: int = 0,
    ) -> None:
        missing = {"generator", "discriminator"} - set(models)
        if missing:
            from scaletrain.errors import ConfigError

            raise ConfigError(f"task gan needs a model with {', '.join(sorted(missing))}")
        self.cfg = cfg
        self.device = device
        self.models = models
        self.generator = models["generator"]
        self.discriminator = models["discriminator"]
        self.optimizers = {
            name: make_optimizer(optim, m.parameters()) for name, m in models.items()
        }
        self.autocast = autocast if autocast is not None else nullcontext()
        self.rng = torch.Generator(device=device)
        self.rng.manual_seed(seed)

    # ------------------------------------------------------------------ sampling

    def sample_latent(self, energy_gev: torch.Tensor, rng: torch.Generator | None = None):
        noise = torch.randn(
            energy_gev.shape[0], self.cfg.latent_size, device=self.device, generator=rng or self.rng
        )
        return noise * (energy_gev * self.cfg.energy_scale).unsqueeze(1)

    def sample_energies(self, n: int) -> torch.Tensor:
        lo, hi = self.cfg.gen_energy_range
        u = torch.rand(n, device=self.device, generator=self.rng)
        return lo + (hi - lo) * u

    def _labels(self, value: float, n: int) -> torch.Tensor:
        labels = torch.full((n,), value, device=self.device)
        flip = torch.rand(n, device=self.device, generator=self.rng) < self.cfg.label_flip
        return torch.where(flip, 1.0 - labels, labels)

    # ------------------------------------------------------------------ steps

    def _discriminator_loss(self, real: torch.Tensor, energy: torch.Tensor) -> dict[str, Any]:
        n = real.shape[0]
        fake_energy = self.sample_energies(n)
        with torch.no_grad(), self.autocast:
            fake = self.generator(self.sample_latent(fake_energy))
        with self.autocast:
            on_real = self.discriminator(real)
            on_fake = self.discriminator(fake.detach())
        labels = self._labels(1.0, n), self._labels(0.0, n)
        losses = discriminator_losses(self.cfg, on_real, on_fake, energy, fake_energy, labels)
        return dict(zip(D_NAMES, losses, strict=True))

    def _generator_loss(self, n: int) -> dict[str, torch.Tensor]:
        energy = self.sample_energies(n)
        with self.autocast:
            fake = self.generator(self.sample_latent(energy))
            judged = self.discriminator(fake)
        return dict(zip(G_NAMES, generator_losses(self.cfg, judged, fake, energy), strict=True))

    def _real(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        real = batch["ECAL"].to(self.device, non_blocking=True).unsqueeze(1)
        if self.cfg.image_scale != 1.0:
            real = real * self.cfg.image_scale
        return real, batch["energy"].to(self.device, non_blocking=True)

    def _train_losses(self) -> tuple[Callable[..., dict], Callable[..., dict]]:
        """The (discriminator, generator) loss functions of a training step."""
        return self._discriminator_loss, self._generator_loss

    def train_step(self, batch: Batch, update: Update) -> dict[str, torch.Tensor]:
        real, energy = self._real(batch)
        d_loss, g_loss = self._train_losses()
        for _ in range(self.cfg.discriminator_steps):
            d = d_loss(real, energy)
            update("discriminator", d["d_loss"])
        # the discriminator is fixed during the generator steps: no gradients for it
        self.discriminator.requires_grad_(False)
        try:
            for _ in range(self.cfg.generator_steps):
                g = g_loss(real.shape[0])
                update("generator", g["g_loss"])
        finally:
            self.discriminator.requires_grad_(True)
        return {k: v.detach() for k, v in {**d, **g}.items()}

    @torch.no_grad()
    def eval_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        real, energy = self._real(batch)
        d = self._discriminator_loss(real, energy)
        g = self._generator_loss(real.shape[0])
        out = {k: v.detach() for k, v in {**d, **g}.items()}
        out["loss"] = out["g_loss"]
        return out

    @torch.no_grad()
    def generate(self, energy_gev: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Showers (B, 25, 25, 25) in GeV for the requested primary energies."""
        with self.autocast:
            images = self.generator(self.sample_latent(energy_gev.to(self.device), rng))
        return images.float().squeeze(1) / self.cfg.image_scale

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.set_state(state["rng"])
