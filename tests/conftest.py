"""Shared fixtures: small simulated data sets, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scaletrain.config import load_config


@pytest.fixture(autouse=True)
def _torch_threads():
    """Each test starts with the session's thread count: the trainer sets it for the whole
    process (run.threads), which changes later tests' summation order."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shower_dir(tmp_path_factory) -> Path:
    """240 simulated electron showers, 10-500 GeV, in two shards."""
    from scaletrain.data.simulator import simulate_to_files

    out = tmp_path_factory.mktemp("showers")
    simulate_to_files(out, 240, (10.0, 500.0), seed=123, shard_size=120, progress=False)
    return out


@pytest.fixture
def tiny_gan_config(shower_dir, tmp_path):
    """A tiny 3DGAN run config on the shared showers; tests add their own overrides."""

    def make(*overrides: str):
        return load_config(
            None,
            [
                f"run.dir={tmp_path / 'run'}",
                f"data.path={shower_dir}",
                "data.val_fraction=0.2",
                "model.name=tiny-3dgan",
                "gan.latent_size=16",
                "data.max_showers=100",
                "train.batch_size=8",
                "train.epochs=2",
                "train.log_every=1",
                "train.progress=false",
                "run.threads=2",
                *overrides,
            ],
        )

    return make
