"""Small models for tests and CPU examples."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Flattens its input; returns {"logits", "energy"} like calo-cnn so tasks treat both alike."""

    def __init__(self, in_features: int, n_classes: int = 2, hidden: tuple[int, ...] = (64,)):
        super().__init__()
        self.in_features = in_features
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.classify = nn.Linear(width, n_classes)
        self.regress = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {"logits": self.classify(h), "energy": self.regress(h).squeeze(1)}

    def pipeline_layers(self) -> list[nn.Module]:
        """The forward as a chain of layers (pipeline parallelism cuts it into stages)."""
        from scaletrain.models.chain import Heads

        heads = Heads([self.classify, self.regress], [False, True], ["logits", "energy"])
        return [*self.body, heads]

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.in_features)


def build_mlp(
    in_features: int = 25 * 25 * 25, n_classes: int = 2, hidden: tuple[int, ...] = (64,)
) -> dict[str, nn.Module]:
    return {"model": MLP(in_features, n_classes, tuple(hidden))}


def build_tiny_3dgan(latent_size: int = 16) -> dict[str, nn.Module]:
    """The 3DGAN's shape with a handful of filters: fast enough for multi-process tests."""
    from scaletrain.models.threedgan import build_3dgan

    return build_3dgan(
        latent_size, generator_filters=(4, 2, 2), discriminator_filters=(2, 2, 2, 2), dropout=0.0
    )
