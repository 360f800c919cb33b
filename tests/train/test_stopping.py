"""A stop signal ends training after the current step with a checkpoint to resume from."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from scaletrain.errors import ConfigError
from scaletrain.train.checkpoint import latest_checkpoint, load_checkpoint
from scaletrain.train.stopping import StopSignals, signal_number
from scaletrain.train.trainer import Trainer, train


def test_signal_names_are_checked():
    assert signal_number("term") == signal_number("SIGTERM") == signal.SIGTERM
    with pytest.raises(ConfigError, match="SIGNOPE"):
        StopSignals(["SIGNOPE"])
    with pytest.raises(ConfigError, match="cannot be caught"):
        StopSignals(["SIGKILL"])


def test_the_first_signal_is_kept_and_the_handlers_are_put_back():
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals(["SIGUSR1", "SIGUSR2"]) as stop:
        assert stop.requested is None
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR1)  # a repeat or another: the same notice
        assert stop.requested == "SIGUSR2"
    assert signal.getsignal(signal.SIGUSR1) is before


@pytest.mark.parametrize("at", [13, 10])
def test_a_signal_stops_after_the_step_and_resumes_exactly(tiny_gan_config, tmp_path, at):
    """10 steps per epoch; SIGUSR1 after step 13 (mid-epoch) or 10 (the epoch's last, its
    end left to the resumed run) stops there with a checkpoint of that step; --resume ends
    with the models of an uninterrupted run."""
    full = train(tiny_gan_config(f"run.dir={tmp_path / 'full'}"))
    cfg = tiny_gan_config(f"run.dir={tmp_path / 'part'}")

    def signal_after(step: int) -> None:
        if step == at:
            os.kill(os.getpid(), signal.SIGUSR1)

    with StopSignals(["SIGUSR1"]) as stop:
        result = Trainer(cfg, step_callback=signal_after, stop=stop).fit()
    assert (result.stopped, result.steps, result.epochs) == ("SIGUSR1", at, (at - 1) // 10)
    assert result.checkpoint == latest_checkpoint(tmp_path / "part")
    assert load_checkpoint(result.checkpoint)["batch"] == at - 10 * ((at - 1) // 10)
    resumed = train(cfg, resume=True)
    assert resumed.stopped is None and resumed.steps == full.steps == 20
    assert resumed.best == full.best
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))["models"]
    b = load_checkpoint(latest_checkpoint(tmp_path / "part"))["models"]
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)
