"""calo-cnn: particle-type classification and energy regression on calorimeter images."""

from __future__ import annotations

import torch
from torch import nn


class CaloCNN(nn.Module):
    """3-D CNN with two heads: class logits (n_classes) and the primary energy (GeV/100)."""

    def __init__(
        self,
        n_classes: int = 2,
        channels: tuple[int, ...] = (8, 16, 32),
        hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for ch in channels:
            layers += [
                nn.Conv3d(in_ch, ch, 3, padding=1),
                nn.BatchNorm3d(ch),
                nn.ReLU(),
                nn.MaxPool3d(2, ceil_mode=True),
            ]
            in_ch = ch
        layers += [nn.AdaptiveAvgPool3d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.trunk = nn.Sequential(nn.Linear(in_ch + 1, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.classify = nn.Linear(hidden, n_classes)
        self.regress = nn.Linear(hidden, 1)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        # the log of the total deposit is a strong, cheap feature for the energy head
        total = image.sum(dim=(1, 2, 3, 4)).clamp_min(1e-6).log().unsqueeze(1)
        h = self.trunk(torch.cat([self.features(image), total], dim=1))
        return {"logits": self.classify(h), "energy": self.regress(h).squeeze(1)}

    def pipeline_layers(self) -> list[nn.Module]:
        """The forward as a chain of layers (pipeline parallelism cuts it into stages): the
        log deposit travels next to the image features until they are joined."""
        from scaletrain.models.chain import Heads, OnFirst

        heads = Heads([self.classify, self.regress], [False, True], ["logits", "energy"])
        features = [OnFirst(layer) for layer in self.features]
        return [_WithLogTotal(), *features, _Join(), *self.trunk, heads]

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, 1, 25, 25, 25)


class _WithLogTotal(nn.Module):
    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return image, image.sum(dim=(1, 2, 3, 4)).clamp_min(1e-6).log().unsqueeze(1)


class _Join(nn.Module):
    def forward(self, xs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(xs), dim=1)


def build_calo_cnn(
    n_classes: int = 2,
    channels: tuple[int, ...] = (8, 16, 32),
    hidden: int = 64,
    dropout: float = 0.1,
) -> dict[str, nn.Module]:
    return {"model": CaloCNN(n_classes, tuple(channels), hidden, dropout)}
