"""Fixtures of the parallel tests: small synthetic classification data and its config."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def class_dir(tmp_path_factory) -> Path:
    """4000 samples of the synthetic XOR classification problem (best accuracy about 91 %)."""
    from scaletrain.data.synthetic import write_classification

    return write_classification(tmp_path_factory.mktemp("classes"), 4000, shards=2, seed=0)


@pytest.fixture
def class_overrides(class_dir, tmp_path):
    """Config overrides of a small MLP classifying the synthetic data; add your own."""

    def make(name: str, *extra: str) -> list[str]:
        return [
            f"run.dir={tmp_path / name}",
            "run.device=cpu",
            "run.threads=1",
            f"data.path={class_dir}",
            "data.val_fraction=0.25",
            "model.name=mlp",
            "model.args={in_features: 32, hidden: [64]}",
            "task=supervised",
            "supervised.target=pdg",
            "optim.name=sgd",
            "optim.lr=0.01",
            "optim.momentum=0.9",
            "train.batch_size=32",
            "train.progress=false",
            "train.log_every=10",
            "train.best_metric=val/accuracy",
            "train.best_mode=max",
            *extra,
        ]

    return make
