"""Electron / pion separation with a Keras 3 classifier on shower-shape features.

Nothing here knows scaletrain. The config names `epi:load` as the data source (it reads
the showers made by `scaletrain data simulate` and returns {"x": features, "label": 0 e- /
1 pi+}) and `epi:build` as the model. With KERAS_BACKEND=torch (scaletrain chooses it when
it imports this module first) the Keras model trains like any torch module.
"""

from __future__ import annotations

import keras
import numpy as np

from scaletrain.data.io import expand_paths, read_showers

N_FEATURES = 25 + 13 + 1


def shower_features(ecal: np.ndarray) -> np.ndarray:
    """Longitudinal profile (25 layers) and radial profile (13 rings) as log fractions of the
    shower's deposited energy, and the log of that energy: (N, 39) float32, all of order 1
    (no statistics of the data set, so nothing leaks from validation into training)."""
    total = ecal.sum(axis=(1, 2, 3))
    safe = np.maximum(total, 1e-6)[:, None]
    longitudinal = ecal.sum(axis=(1, 2)) / safe
    size = ecal.shape[1]
    yy, xx = np.indices((size, size)) - (size - 1) / 2
    ring = np.minimum(np.rint(np.hypot(xx, yy)).astype(int), 12)
    per_cell = ecal.sum(axis=3).reshape(len(ecal), -1)
    radial = np.stack([per_cell[:, ring.ravel() == r].sum(axis=1) for r in range(13)], 1) / safe
    fractions = np.log10(np.concatenate([longitudinal, radial], 1) + 1e-4) / 4 + 1
    return np.concatenate([fractions, np.log10(safe)], 1).astype(np.float32)


def load(electrons: str, pions: str, max_per_class: int | None = None) -> dict:
    """Features and labels of the showers in two directories (or files)."""
    xs, labels = [], []
    for label, spec in enumerate((electrons, pions)):
        ecal = np.concatenate([read_showers(p)["ECAL"] for p in expand_paths(spec)])
        ecal = ecal[:max_per_class]
        xs.append(shower_features(ecal))
        labels.append(np.full(len(ecal), label))
    return {"x": np.concatenate(xs), "label": np.concatenate(labels)}


def build(hidden: int = 64, dropout: float = 0.2, depth: int = 2) -> keras.Model:
    """An MLP on the features; two logits (e-, pi+)."""
    layers = [keras.Input((N_FEATURES,))]
    for _ in range(depth):
        layers += [keras.layers.Dense(hidden, activation="relu"), keras.layers.Dropout(dropout)]
    layers.append(keras.layers.Dense(2))
    return keras.Sequential(layers, name="epi_classifier")
