"""Tasks: what one training step means."""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import nn

from scaletrain.config import Config
from scaletrain.tasks.base import Task
from scaletrain.tasks.gan import GanTask
from scaletrain.tasks.supervised import SupervisedTask

TASKS = {"gan": GanTask, "supervised": SupervisedTask}


def build_task(
    cfg: Config,
    models: dict[str, nn.Module],
    device: torch.device,
    autocast: AbstractContextManager | None = None,
    seed: int | None = None,
) -> Task:
    """The task of cfg.task; `seed` seeds its random draws (default run.seed)."""
    seed = cfg.run.seed if seed is None else seed
    if cfg.task == "gan" and (cfg.gan.discriminator_loss or cfg.gan.generator_loss):
        from scaletrain.tasks.user import UserGanTask

        if cfg.gan.fast_path == "on":
            from scaletrain.errors import ConfigError

            raise ConfigError("gan.fast_path: on is the 3DGAN's step; your own GAN losses need off")

        return UserGanTask(cfg.gan, cfg.optim, models, device, autocast, seed=seed)
    if cfg.task == "gan":
        from scaletrain.tasks.fast_gan import FastGanTask, use_fast_path

        if use_fast_path(cfg.gan, models, device):
            return FastGanTask(cfg.gan, cfg.optim, models, device, autocast, seed=seed)
    section = cfg.gan if cfg.task == "gan" else cfg.supervised
    return TASKS[cfg.task](section, cfg.optim, models, device, autocast, seed=seed)
