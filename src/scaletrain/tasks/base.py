"""What a task is: models, optimizers, and one training step.

A task never knows how training is distributed. It calls `update(name, loss)` for each
optimizer step it wants; the trainer turns that into backward, the distribution strategy's
gradient hook, and the optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from scaletrain.config import OptimConfig

Update = Callable[[str, torch.Tensor], None]
Batch = dict[str, torch.Tensor]


class Task(Protocol):
    models: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def train_step(self, batch: Batch, update: Update) -> dict[str, torch.Tensor]: ...

    def eval_step(self, batch: Batch) -> dict[str, torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def make_optimizer(cfg: OptimConfig, params: Any, fused: bool = False) -> torch.optim.Optimizer:
    """The configured optimizer; RMSprop's defaults follow Keras (rho 0.9, eps 1e-7).
    `fused`: Adam in one pass over each tensor (PyTorch's fused kernel, also on the CPU)."""
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=cfg.lr,
            alpha=cfg.rho,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
        )
    if cfg.name == "adam":
        return torch.optim.Adam(
            params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused or None
        )
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def mape(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute percentage error, as Keras defines it (in per cent)."""
    return 100.0 * ((pred - target).abs() / target.abs().clamp_min(1e-7)).mean()
