import h5py
import numpy as np
import pytest
import torch

from scaletrain.cli import main
from scaletrain.errors import CheckpointError, ConfigError
from scaletrain.generate import generate_file, load_generator_task, parse_energies
from scaletrain.train.trainer import train


@pytest.fixture(scope="module")
def energy_trained_checkpoint(tmp_path_factory, shower_dir):
    """A tiny generator trained on the deposited-energy term alone (fast to learn)."""
    from scaletrain.config import load_config

    run = tmp_path_factory.mktemp("cond") / "run"
    cfg = load_config(
        None,
        [
            f"run.dir={run}",
            f"data.path={shower_dir}",
            "data.val_fraction=0.2",
            "model.name=tiny-3dgan",
            "gan.latent_size=16",
            "train.batch_size=16",
            "train.epochs=2",
            "train.progress=false",
            "run.threads=1",
            "optim.lr=0.003",
            "gan.loss_weights=[0.0, 0.0, 1.0]",
        ],
    )
    train(cfg)
    return run / "best.pt"


def test_generator_conditioning_scales_deposit_with_requested_energy(energy_trained_checkpoint):
    task = load_generator_task(energy_trained_checkpoint, "cpu")
    rng = torch.Generator().manual_seed(0)
    deposit = {
        e: task.generate(torch.full((64,), e), rng).sum(dim=(1, 2, 3)).mean().item()
        for e in (50.0, 100.0, 400.0)
    }
    assert deposit[50.0] < deposit[100.0] < deposit[400.0]
    # 8x the energy: 8x the deposit once converged; an unconditioned generator stays near 1.
    # After a few dozen CPU steps the ratio is that of a conditioned generator but not yet 8:
    # 18.8 with torch 2.13 and numpy 2.4, 4-16 with earlier releases
    assert 4.0 < deposit[400.0] / deposit[50.0] < 32.0


def test_generate_writes_the_3dgan_layout(energy_trained_checkpoint, tmp_path):
    out = tmp_path / "gen.h5"
    result = generate_file(
        energy_trained_checkpoint,
        out,
        n=10,
        energies="10,100",
        batch_size=4,
        device="cpu",
        progress=False,
    )
    assert result.n == 10
    with h5py.File(out) as f:
        assert f["ECAL"].shape == (10, 25, 25, 25) and f["ECAL"].dtype == np.float32
        np.testing.assert_array_equal(f["energy"][:4], [10, 100, 10, 100])
    code = main(["generate", str(energy_trained_checkpoint), "--out", str(out), "--n", "3"])
    assert code == 2  # exists: not overwritten without --overwrite


def test_generate_refuses_bad_inputs(tmp_path, energy_trained_checkpoint):
    with pytest.raises(ConfigError):
        parse_energies("500:10")
    with pytest.raises(CheckpointError, match="not found"):
        load_generator_task(tmp_path / "missing.pt")
    state = torch.load(energy_trained_checkpoint, weights_only=True)
    state["models"]["generator"] = {"dense.weight": torch.zeros(3, 3)}
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_generator_task(tmp_path / "other.pt", "cpu")
