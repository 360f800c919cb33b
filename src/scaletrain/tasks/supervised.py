"""Supervised learning on calorimeter images: particle classification or energy regression."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scaletrain.config import OptimConfig, SupervisedConfig
from scaletrain.errors import ConfigError, DataError
from scaletrain.tasks.base import Batch, Update, make_optimizer, mape
from scaletrain.tasks.user import call_user, user_function


class SupervisedTask:
    """The model maps an image to {"logits": (B, C), "energy": (B,)} (or a plain tensor)."""

    def __init__(
        self,
        cfg: SupervisedConfig,
        optim: OptimConfig,
        models: dict[str, nn.Module],
        device: torch.device,
        autocast: AbstractContextManager | None = None,
        seed: int = 0,
    ) -> None:
        if len(models) != 1:
            raise ConfigError(f"task supervised trains one model, got {', '.join(models)}")
        ((self.name, self.model),) = models.items()
        self.cfg = cfg
        self.device = device
        self.models = models
        self.optimizers = {self.name: make_optimizer(optim, self.model.parameters())}
        self.autocast = autocast if autocast is not None else nullcontext()
        self.class_of_pdg = {pdg: i for i, pdg in enumerate(cfg.classes)}
        # the user's functions (outputs, batch) -> scalar or dict: the loss, extra metrics
        self.user_loss = user_function(cfg.loss, "supervised.loss") if cfg.loss else None
        self.user_metrics = [
            user_function(spec, f"supervised.metrics[{i}]") for i, spec in enumerate(cfg.metrics)
        ]

    def _inputs(self, batch: Batch) -> torch.Tensor:
        x = batch["x"] if "x" in batch else batch["ECAL"].unsqueeze(1)
        x = x.to(self.device, non_blocking=True)
        return x * self.cfg.image_scale if self.cfg.image_scale != 1.0 else x

    def _targets(self, batch: Batch) -> torch.Tensor:
        if self.cfg.target == "energy":
            return batch["energy"].to(self.device).float() / 100.0
        if self.cfg.target == "label":
            return batch["label"].to(self.device).long()
        pdg = batch["pdg"].tolist()
        try:
            return torch.tensor([self.class_of_pdg[p] for p in pdg], device=self.device)
        except KeyError as exc:
            raise DataError(
                f"particle id {exc.args[0]} is not in supervised.classes {self.cfg.classes}"
            ) from None

    def _losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        with self.autocast:
            out = self.model(self._inputs(batch))
        if self.user_loss is not None or self.user_metrics:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.user_loss is None:
            losses = self._target_losses(out, batch)
        else:
            losses = call_user(self.user_loss, out, batch)
        for fn in self.user_metrics:
            losses.update(call_user(fn, out, batch, metric=True))
        return losses

    def _target_losses(self, out: Any, batch: Batch) -> dict[str, torch.Tensor]:
        target = self._targets(batch)
        if self.cfg.target == "energy":
            pred = (out["energy"] if isinstance(out, dict) else out.squeeze(-1)).float()
            loss = (
                mape(pred, target)
                if self.cfg.regression_loss == "mape"
                else F.mse_loss(pred, target)
            )
            return {"loss": loss, "energy_mape": mape(pred, target)}
        logits = (out["logits"] if isinstance(out, dict) else out).float()
        loss = F.cross_entropy(logits, target)
        accuracy = (logits.argmax(dim=1) == target).mean(dtype=torch.float32)
        return {"loss": loss, "accuracy": accuracy}

    def train_step(self, batch: Batch, update: Update) -> dict[str, torch.Tensor]:
        losses = self._losses(batch)
        update(self.name, losses["loss"])
        return {k: v.detach() for k, v in losses.items()}

    @torch.no_grad()
    def eval_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._losses(batch)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
