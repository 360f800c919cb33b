"""A user's own code, as the tests name it by import path (`byom_user:...`).

Nothing here knows scaletrain: builders return torch modules or Keras 3 models, data
functions return arrays, losses take (outputs, batch) or (models, batch).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def blobs(n: int = 480, dim: int = 8, classes: int = 3, seed: int = 0) -> dict:
    """Gaussian blobs: float64 features and integer labels (as numpy would hand them over)."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * np.random.default_rng(99).normal(size=(classes, dim))
    label = rng.integers(0, classes, size=n)
    return {"x": centres[label] + rng.normal(size=(n, dim)), "label": label}


def line(n: int = 320, dim: int = 4, seed: int = 0):
    """A regression pair (x, y): y = x·w + small noise (float32, as torch would hand it over)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x, (x @ np.arange(1.0, dim + 1) / dim + 0.05 * rng.normal(size=n)).astype(np.float32)


def torch_mlp(dim: int = 8, hidden: int = 16, classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def keras_mlp(dim: int = 8, hidden: int = 16, classes: int = 3, dropout: float = 0.0):
    import keras

    layers = [keras.Input((dim,)), keras.layers.Dense(hidden, activation="relu")]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    # momentum 0.8: moving statistics usable after the few steps of a test
    layers += [keras.layers.BatchNormalization(momentum=0.8), keras.layers.Dense(classes)]
    return keras.Sequential(layers)


def keras_unbuilt():
    import keras

    return keras.Sequential([keras.layers.Dense(3)])


def mse(outputs, batch):
    return F.mse_loss(outputs.squeeze(-1), batch["y"])


def abs_error(outputs, batch):
    return (outputs.squeeze(-1) - batch["y"]).abs().mean()


def not_a_scalar(outputs, batch):
    return (outputs.squeeze(-1) - batch["y"]) ** 2


def one_argument(outputs):
    return outputs.sum()


# ---------------------------------------------------------------------------- a small GAN


def gan_models(dim: int = 2, latent: int = 4, hidden: int = 16) -> dict:
    generator = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))
    discriminator = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))
    return {"generator": generator, "discriminator": discriminator}


def keras_discriminator_gan(dim: int = 2, latent: int = 4, hidden: int = 16) -> dict:
    """A torch generator and a Keras discriminator in one GAN."""
    import keras

    models = gan_models(dim, latent, hidden)
    models["discriminator"] = keras.Sequential(
        [keras.Input((dim,)), keras.layers.Dense(hidden, activation="relu"), keras.layers.Dense(1)]
    )
    return models


def ring(n: int = 256, seed: int = 0) -> dict:
    """Points on a noisy unit circle: what the GAN learns to draw."""
    rng = np.random.default_rng(seed)
    phi = rng.uniform(0, 2 * np.pi, size=n)
    points = np.stack([np.cos(phi), np.sin(phi)], axis=1) + 0.05 * rng.normal(size=(n, 2))
    return {"x": points.astype(np.float32)}


def _fake(models, batch):
    latent = models["generator"][0].in_features
    return models["generator"](torch.randn(batch["x"].shape[0], latent))


def d_loss(models, batch):
    real = models["discriminator"](batch["x"])
    fake = models["discriminator"](_fake(models, batch))
    loss = F.binary_cross_entropy_with_logits(
        real, torch.ones_like(real)
    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    return {"loss": loss, "real_score": torch.sigmoid(real).mean()}


def g_loss(models, batch):
    fake = _fake(models, batch)
    logit = models["discriminator"](fake)
    loss = F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
    return {"loss": loss, "radius": fake.norm(dim=1).mean()}
