"""kill -9 in the middle of an epoch, then --resume: the same final weights, bitwise (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from scaletrain.config import save_config
from scaletrain.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from scaletrain.train.trainer import train


def final_models(run_dir: Path) -> dict:
    return load_checkpoint(latest_checkpoint(run_dir))["models"]


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [int(p.name[9:17]) for p in list_checkpoints(run_dir)]
        if steps and max(steps) >= step:
            return
        assert proc.poll() is None, f"training ended early:\n{proc.stderr.read()}"
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of step {step} within {timeout} s")


def test_kill_mid_epoch_then_resume_equals_uninterrupted_run(tiny_gan_config, tmp_path):
    overrides = ("train.checkpoint_every=2", "train.keep_last=3")
    reference = train(tiny_gan_config(f"run.dir={tmp_path / 'ref'}", *overrides))
    per_epoch = reference.steps // 2

    cfg = tiny_gan_config(f"run.dir={tmp_path / 'killed'}", *overrides)
    save_config(cfg, tmp_path / "cfg.yaml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaletrain", "train", str(tmp_path / "cfg.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_step(tmp_path / "killed", per_epoch + 2, proc, timeout=300)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    interrupted_at = load_checkpoint(latest_checkpoint(tmp_path / "killed"))
    assert interrupted_at["step"] < reference.steps and interrupted_at["batch"] > 0

    resumed = train(cfg, resume=True)
    assert resumed.steps == reference.steps
    a, b = final_models(tmp_path / "ref"), final_models(tmp_path / "killed")
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)
