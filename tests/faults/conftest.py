"""Fixtures of the fault tests: a small MLP on synthetic data, written as a config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaletrain.config import load_config, save_config


@pytest.fixture(scope="session")
def xor_dir(tmp_path_factory) -> Path:
    """2000 samples of the synthetic XOR classification problem, in two shards."""
    from scaletrain.data.synthetic import write_classification

    return write_classification(tmp_path_factory.mktemp("xor"), 2000, shards=2, seed=0)


@pytest.fixture
def mlp_config(xor_dir, tmp_path):
    """Write the config of a small MLP classifier (with extra overrides); returns its path."""

    def make(name: str, *extra: str) -> Path:
        cfg = load_config(
            None,
            [
                f"run.dir={tmp_path / name}",
                "run.device=cpu",
                "run.threads=1",
                f"data.path={xor_dir}",
                "data.val_fraction=0.25",
                "model.name=mlp",
                "model.args={in_features: 32, hidden: [32]}",
                "task=supervised",
                "supervised.target=pdg",
                "optim.name=sgd",
                "optim.lr=0.01",
                "optim.momentum=0.9",
                "train.batch_size=16",
                "train.progress=false",
                "train.log_every=5",
                *extra,
            ],
        )
        path = tmp_path / f"{name}.yaml"
        save_config(cfg, path)
        return path

    return make
