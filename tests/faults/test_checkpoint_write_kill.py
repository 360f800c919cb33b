"""A kill during a checkpoint write leaves the last good checkpoint loadable."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import torch

from scaletrain.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint

WRITER = textwrap.dedent("""
    import sys, torch
    from scaletrain.train.checkpoint import checkpoint_name, save_checkpoint
    big = torch.arange(8_000_000, dtype=torch.float32)  # 32 MB: writes take a while
    for step in range(1, 10_000):
        save_checkpoint(f"{sys.argv[1]}/" + checkpoint_name(step),
                        {"config": {}, "models": {"m": {"w": big + step}}, "step": step})
        print(step, flush=True)
""")


def test_kill_during_checkpoint_writes_never_leaves_a_broken_latest(tmp_path):
    rng = random.Random(0)
    for attempt in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        proc.stdout.readline()  # at least one checkpoint is complete
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        latest = latest_checkpoint(tmp_path)
        state = load_checkpoint(latest)
        assert torch.equal(
            state["models"]["m"]["w"][:3], torch.tensor([0.0, 1.0, 2.0]) + state["step"]
        ), attempt
        # partial writes only ever exist as hidden temporary files
        visible = {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")}
        assert visible == {p.name for p in list_checkpoints(tmp_path)}
