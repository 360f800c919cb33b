"""Asynchronous training (downpour, 1 master + 2 workers) losing a process: a lost worker is
named and left behind (on_worker_loss: continue) and the training finishes; a lost master
is named by the workers, which end the job."""

from __future__ import annotations

import os
import signal
import time

import pytest
from _procs import launch, wait_until

from scaletrain.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint

TIMEOUT_S = 4.0
pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]


def appeared(job, text: str) -> bool:
    return text in job.stderr


def test_a_lost_worker_is_left_behind_and_the_training_finishes(mlp_config, tmp_path):
    # epochs of 50-100 ms on 2 cores: 40 of them keep worker 2 training for seconds after the
    # first checkpoint, when it is stopped (with 6 it could have sent its last update already)
    config = mlp_config(
        "run", "train.epochs=40", f"parallel.timeout_s={TIMEOUT_S}",
        "parallel.on_worker_loss=continue",
    )  # fmt: skip
    job = launch(tmp_path, 3, ["train", str(config), "--mode", "downpour"])
    try:
        pids = job.ranks(3)
        wait_until(lambda: list_checkpoints(tmp_path / "run"), 60, "the first epoch")
        assert job.proc.poll() is None, job.stderr[-3000:]
        # SIGSTOP: a worker that hangs (mpiexec would end the whole job if it died)
        os.kill(pids[2], signal.SIGSTOP)
        t0 = time.monotonic()
        warning = "no message from rank 2 within 4 s (parallel.timeout_s)"
        wait_until(lambda: appeared(job, warning), TIMEOUT_S + 10, "the master's warning")
        noticed = time.monotonic() - t0
        code = job.wait(60)
        ended = time.monotonic() - t0
    finally:
        job.kill()
    print(f"\nworker 2 stopped: the master noticed after {noticed:.1f} s; job ended {ended:.1f} s")
    err = job.stderr
    assert TIMEOUT_S - 0.5 < noticed < TIMEOUT_S + 3, noticed
    assert "going on without it (parallel.on_worker_loss: continue)" in err
    # the master trained every epoch with the remaining worker, wrote it, then ended the job
    # (MPI_Abort(0): MPI_Finalize would wait for the stopped worker forever)
    assert code == 0, err[-3000:]
    assert "trained 40 epochs" in job.stdout, job.stdout[-2000:] + err[-2000:]
    state = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert state["epoch"] == 40
    assert (tmp_path / "run" / "best.pt").is_file()
    assert "rank 0: done, but rank 2 did not reach the end" in err


def test_a_lost_master_is_named_by_the_workers(mlp_config, tmp_path):
    config = mlp_config("run", "train.epochs=500", f"parallel.timeout_s={TIMEOUT_S}")
    job = launch(tmp_path, 3, ["train", str(config), "--mode", "downpour"])
    try:
        pids = job.ranks(3)
        wait_until(lambda: list_checkpoints(tmp_path / "run"), 60, "the first epoch")
        assert job.proc.poll() is None, job.stderr[-3000:]
        os.kill(pids[0], signal.SIGSTOP)  # the master freezes (it dying ends the job at once)
        t0 = time.monotonic()
        code = job.wait(TIMEOUT_S + 20)
        ended = time.monotonic() - t0
    finally:
        job.kill()
    print(f"\nmaster stopped: the job ended after {ended:.1f} s")
    err = job.stderr
    assert code != 0
    assert ended < TIMEOUT_S + 3, ended
    # the first worker to time out says so, then ends the job (MPI_Abort)
    assert "no reply at step" in err and "from parameter server rank 0 within 4 s" in err, err
    assert "Traceback" not in err
