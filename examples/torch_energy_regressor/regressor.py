"""A calorimeter energy regressor in plain PyTorch: shower image (1, 25, 25, 25) -> Ep / 100 GeV.

Nothing here knows scaletrain. The config names `regressor:build` as the model,
`regressor:relative_mse` as the loss and `regressor:resolution` / `regressor:bias` as metrics;
each loss or metric gets the model's outputs and the batch (a dict of tensors: "ECAL",
"energy" in GeV, "theta", "pdg").
"""

from __future__ import annotations

import torch
from torch import nn


class EnergyRegressor(nn.Module):
    """Cells pooled into 5×5×5 towers by a learned strided convolution, then an MLP."""

    def __init__(self, channels: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.towers = nn.Sequential(nn.Conv3d(1, channels, kernel_size=5, stride=5), nn.ReLU())
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * 125, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.towers(image)).squeeze(-1)


def build(channels: int = 8, hidden: int = 64) -> nn.Module:
    return EnergyRegressor(channels, hidden)


def _relative_error(outputs: torch.Tensor, batch: dict) -> torch.Tensor:
    truth = batch["energy"] / 100.0
    return (outputs.float() - truth) / truth


def relative_mse(outputs: torch.Tensor, batch: dict) -> torch.Tensor:
    """Squared relative error: every energy counts alike, as in a resolution."""
    return _relative_error(outputs, batch).pow(2).mean()


def resolution(outputs: torch.Tensor, batch: dict) -> torch.Tensor:
    """sigma(E_pred / E_true - 1) over the batch."""
    return _relative_error(outputs, batch).std()


def bias(outputs: torch.Tensor, batch: dict) -> torch.Tensor:
    """mean(E_pred / E_true - 1) over the batch."""
    return _relative_error(outputs, batch).mean()
