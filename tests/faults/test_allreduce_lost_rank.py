"""A rank of a synchronous all-reduce training freezes or dies: every other rank names it and
exits non-zero within parallel.timeout_s (plus heartbeats), instead of waiting forever."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from _procs import exit_codes, exit_times, launch, wait_until

from scaletrain.parallel.liveness import EXIT_PEER_LOST, beat_interval

TIMEOUT_S = 4.0
pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]


def logged_step(run_dir) -> int:
    path = run_dir / "metrics.jsonl"
    rows = path.read_text().splitlines() if path.exists() else []
    return max((json.loads(r)["step"] for r in rows if r.endswith("}")), default=0)


def test_a_frozen_rank_ends_the_others_with_its_name(mlp_config, tmp_path):
    # SIGSTOP: the process neither dies nor answers (a hung node, a process stuck in the
    # kernel): no launcher notices, a collective with it would never complete
    job, pids = start(mlp_config, tmp_path)
    try:
        os.kill(pids[2], signal.SIGSTOP)
        t0 = time.monotonic()
        times = exit_times({0: pids[0], 1: pids[1]}, t0, TIMEOUT_S + 20)
        job.wait(30)
    finally:
        job.kill()
    err = job.stderr
    print(f"\nSIGSTOP of rank 2: ranks exited after {times} s (timeout_s {TIMEOUT_S})")
    assert set(times) == {0, 1}, f"ranks still running {TIMEOUT_S + 20} s later:\n{err[-3000:]}"
    # declared lost after timeout_s of silence, checked once per heartbeat; acks, then exit
    assert min(times.values()) > TIMEOUT_S - 1.0, times
    assert max(times.values()) < TIMEOUT_S + 6 * beat_interval(TIMEOUT_S) + 1.0, times
    for rank in (0, 1):  # each survivor says it, before the first exit ends the job
        assert f"error: rank {rank}: rank 2 of the all-reduce group is lost" in err, err[-3000:]
    assert "Traceback" not in err
    # the first to exit says why; mpiexec then stops the others (the frozen one included)
    codes = exit_codes(job.stdout)
    assert EXIT_PEER_LOST in codes[:2] and job.proc.returncode != 0, codes


def test_a_killed_rank_ends_the_job(mlp_config, tmp_path):
    # mpiexec (MPICH's Hydra) ends the job itself when a process dies; even with
    # -disable-auto-cleanup its proxy kills the job when a dead process's PMI socket closes
    job, pids = start(mlp_config, tmp_path)
    try:
        os.kill(pids[2], signal.SIGKILL)
        t0 = time.monotonic()
        times = exit_times({0: pids[0], 1: pids[1]}, t0, TIMEOUT_S + 20)
        job.wait(30)
    finally:
        job.kill()
    print(f"\nSIGKILL of rank 2: ranks exited after {times} s")
    assert set(times) == {0, 1} and max(times.values()) < TIMEOUT_S + 6, times
    assert job.proc.returncode != 0


def start(mlp_config, tmp_path):
    """3 processes training with all-reduce, until they have logged 10 steps."""
    config = mlp_config("run", "train.epochs=500", f"parallel.timeout_s={TIMEOUT_S}")
    job = launch(tmp_path, 3, ["train", str(config), "--mode", "allreduce"])
    try:
        pids = job.ranks(3)
        wait_until(lambda: logged_step(tmp_path / "run") >= 10, 60, "training to run")
        assert job.proc.poll() is None, job.stderr[-3000:]
    except BaseException:
        job.kill()
        raise
    return job, pids
