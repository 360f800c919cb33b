"""Users' own losses: supervised losses and metrics, and a GAN trained with the user's losses.

A user function is named in the config by import path and called as `fn(first, batch)`:
`(outputs, batch)` for supervised losses and metrics, `(models, batch)` for GAN losses. It
returns a scalar tensor, or a dict of scalars with "loss" among them (the others are logged).
The user never steps an optimizer: losses go through the trainer's `update(name, loss)`, the
one seam where distribution strategies act.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from scaletrain.config import GanConfig, OptimConfig
from scaletrain.errors import ConfigError
from scaletrain.imports import check_call, import_callable
from scaletrain.tasks.base import Batch, Update, make_optimizer


@dataclass(frozen=True)
class UserFunction:
    fn: Callable[..., Any]
    key: str  # the config key that names it
    spec: str

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", self.spec.rpartition(":")[2])


def user_function(spec: str, key: str, wants: str = "(outputs, batch)") -> UserFunction:
    """Import `package.module:fn` and check that it takes two positional arguments."""
    fn = import_callable(spec, key)
    check_call(fn, key, spec, 2, wants=wants)
    return UserFunction(fn, key, spec)


def call_user(
    user: UserFunction, first: Any, batch: Batch, metric: bool = False
) -> dict[str, torch.Tensor]:
    """Call and name the results: {"loss": ...} for a loss, {fn name: ...} for a metric."""
    value = user.fn(first, batch)
    if not isinstance(value, dict):
        value = {user.name if metric else "loss": value}
    elif not metric and "loss" not in value:
        raise ConfigError(
            f"{user.key} = {user.spec!r} returned a dict without 'loss' (keys: {', '.join(value)})"
        )
    out = {}
    for name, v in value.items():
        if not isinstance(v, torch.Tensor):
            if not isinstance(v, (int, float)):
                raise ConfigError(
                    f"{user.key} = {user.spec!r} must return scalar tensors or numbers; "
                    f"{name!r} is {type(v).__name__}"
                )
            v = torch.tensor(float(v))
        if v.numel() != 1:
            raise ConfigError(
                f"{user.key} = {user.spec!r} must return scalars; {name!r} has shape "
                f"{tuple(v.shape)} (reduce it, e.g. with .mean())"
            )
        v = v.reshape(())
        out[name] = v.detach() if metric or name != "loss" else v
    return out


class UserGanTask:
    """A generator and a discriminator trained with the user's losses.

    Each step: `discriminator_steps` discriminator updates, then `generator_steps` generator
    updates, on the same batch. The model not being updated is frozen (no gradients), so a
    generator call inside the discriminator loss costs no backward through the generator.
    """

    def __init__(
        self,
        cfg: GanConfig,
        optim: OptimConfig,
        models: dict[str, nn.Module],
        device: torch.device,
        autocast: AbstractContextManager | None = None,
        seed: int = 0,
    ) -> None:
        if set(models) != {"generator", "discriminator"}:
            raise ConfigError(
                "task gan needs the model builder to return {'generator': G, "
                f"'discriminator': D}}; got {', '.join(sorted(models))}"
            )
        missing = [
            f"gan.{k}" for k in ("discriminator_loss", "generator_loss") if not getattr(cfg, k)
        ]
        if missing:
            raise ConfigError(f"your own GAN losses need both; set {', '.join(missing)}")
        self.cfg = cfg
        self.device = device
        self.models = models
        self.optimizers = {
            name: make_optimizer(optim, m.parameters()) for name, m in models.items()
        }
        self.autocast = autocast if autocast is not None else nullcontext()
        wants = "(models, batch)"
        self.losses = {
            "discriminator": user_function(cfg.discriminator_loss, "gan.discriminator_loss", wants),
            "generator": user_function(cfg.generator_loss, "gan.generator_loss", wants),
        }

    def _loss(self, name: str, batch: Batch) -> dict[str, torch.Tensor]:
        other = self.models["generator" if name == "discriminator" else "discriminator"]
        other.requires_grad_(False)
        try:
            with self.autocast:
                return call_user(self.losses[name], self.models, batch)
        finally:
            other.requires_grad_(True)

    def _on_device(self, batch: Batch) -> Batch:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def train_step(self, batch: Batch, update: Update) -> dict[str, torch.Tensor]:
        batch = self._on_device(batch)
        for _ in range(self.cfg.discriminator_steps):
            d = self._loss("discriminator", batch)
            update("discriminator", d["loss"])
        for _ in range(self.cfg.generator_steps):
            g = self._loss("generator", batch)
            update("generator", g["loss"])
        return _named(d, g)

    @torch.no_grad()
    def eval_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        batch = self._on_device(batch)
        out = _named(self._loss("discriminator", batch), self._loss("generator", batch))
        out["loss"] = out["g_loss"]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _named(d: dict[str, torch.Tensor], g: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {f"d_{k}": v.detach() for k, v in d.items()}
    out.update({f"g_{k}": v.detach() for k, v in g.items()})
    return out
