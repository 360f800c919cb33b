"""The 3DGAN: a conditional 3-D convolutional GAN for 25x25x25 calorimeter showers.

A PyTorch transcription of the published Keras networks (Khattak, Vallecorsa, Carminati).
With the default widths the generator has 872,808 parameters and the discriminator 73,402
(the Keras originals count 872,736 / 73,646 because Keras counts batch-norm statistics).
Layer-by-layer choices follow the Keras defaults: LeakyReLU slope 0.3, batch norm with
momentum 0.99 (0.01 in PyTorch's convention) and epsilon 1e-3.
"""

from __future__ import annotations

import torch
from torch import nn

LEAKY_SLOPE = 0.3  # Keras' LeakyReLU default, used by the published model
BN_MOMENTUM = 0.01  # Keras momentum 0.99
BN_EPS = 1e-3


def _batch_norm(channels: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class Generator(nn.Module):
    """Latent vector (already multiplied by Ep/100) -> shower image (B, 1, 25, 25, 25)."""

    def __init__(
        self,
        latent_size: int = 200,
        base_channels: int = 8,
        filters: tuple[int, int, int] = (64, 6, 6),
    ) -> None:
        super().__init__()
        f1, f2, f3 = filters
        self.latent_size = latent_size
        self.base_channels = base_channels
        self.dense = nn.Linear(latent_size, base_channels * 7 * 7 * 8)
        self.body = nn.Sequential(
            # Keras "same" padding for the even kernel: the extra cell goes after
            nn.ConstantPad3d((3, 4, 2, 3, 2, 3), 0.0),
            nn.Conv3d(base_channels, f1, (6, 6, 8)),
            nn.LeakyReLU(LEAKY_SLOPE),
            _batch_norm(f1),
            nn.Upsample(scale_factor=(2, 2, 2), mode="nearest"),  # 7x7x8 -> 14x14x16
            nn.ConstantPad3d((0, 0, 2, 2, 2, 2), 0.0),  # x, y by 2 -> 18x18x16
            nn.Conv3d(f1, f2, (6, 5, 8)),  # -> 13x14x9
            nn.LeakyReLU(LEAKY_SLOPE),
            _batch_norm(f2),
            nn.Upsample(scale_factor=(2, 2, 3), mode="nearest"),  # -> 26x28x27
            nn.ConstantPad3d((3, 3, 0, 0, 1, 1), 0.0),  # -> 28x28x33
            nn.Conv3d(f2, f3, (3, 3, 8)),  # -> 26x26x26
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Conv3d(f3, 1, (2, 2, 2), bias=False),  # -> 25x25x25
            nn.ReLU(),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Keras: he_uniform for the convolutions, glorot_normal for the last one
        convs = [m for m in self.body if isinstance(m, nn.Conv3d)]
        for conv in convs[:-1]:
            nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.xavier_normal_(convs[-1].weight)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = self.dense(latent).view(-1, self.base_channels, 7, 7, 8)
        return self.body(x)

    def pipeline_layers(self) -> list[nn.Module]:
        """The forward as a chain of layers (pipeline parallelism cuts it into stages)."""
        from scaletrain.models.chain import View

        return [self.dense, View(self.base_channels, 7, 7, 8), *self.body]

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.latent_size)


class Discriminator(nn.Module):
    """Shower image -> (real/fake logit, primary-energy estimate), each of shape (B,).

    The third published output, the summed image energy, has no parameters; the GAN task
    computes it from the image.
    """

    def __init__(self, filters: tuple[int, int, int, int] = (32, 8, 8, 8), dropout: float = 0.2):
        super().__init__()
        f0, f1, f2, f3 = filters
        self.features = nn.Sequential(
            nn.Conv3d(1, f0, 5, padding="same"),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Dropout(dropout),
            nn.ConstantPad3d(2, 0.0),
            nn.Conv3d(f0, f1, 5),
            nn.LeakyReLU(LEAKY_SLOPE),
            _batch_norm(f1),
            nn.Dropout(dropout),
            nn.ConstantPad3d(2, 0.0),
            nn.Conv3d(f1, f2, 5),
            nn.LeakyReLU(LEAKY_SLOPE),
            _batch_norm(f2),
            nn.Dropout(dropout),
            nn.ConstantPad3d(1, 0.0),
            nn.Conv3d(f2, f3, 5),  # 25 -> 23
            nn.LeakyReLU(LEAKY_SLOPE),
            _batch_norm(f3),
            nn.Dropout(dropout),
            nn.AvgPool3d(2),  # -> 11
            nn.Flatten(),
        )
        n_features = f3 * 11 * 11 * 11
        self.real_fake = nn.Linear(n_features, 1)
        self.energy = nn.Linear(n_features, 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(image)
        return self.real_fake(h).squeeze(1), self.energy(h).squeeze(1)

    def pipeline_layers(self) -> list[nn.Module]:
        """The forward as a chain of layers (pipeline parallelism cuts it into stages)."""
        from scaletrain.models.chain import Heads

        return [*self.features, Heads([self.real_fake, self.energy], [True, True])]

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, 1, 25, 25, 25)


def build_3dgan(
    latent_size: int = 200,
    generator_filters: tuple[int, int, int] = (64, 6, 6),
    discriminator_filters: tuple[int, int, int, int] = (32, 8, 8, 8),
    dropout: float = 0.2,
) -> dict[str, nn.Module]:
    """The published 3DGAN; smaller filter counts give a cheaper network of the same shape."""
    return {
        "generator": Generator(latent_size, filters=tuple(generator_filters)),
        "discriminator": Discriminator(tuple(discriminator_filters), dropout),
    }
