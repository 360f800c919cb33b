"""A signal ends training early with a checkpoint, every process at the same step; a
resumed run then ends like one never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _mpi import clean_env, run_driver

from scaletrain.config import load_config, save_config
from scaletrain.parallel.launch import find_mpiexec
from scaletrain.train.checkpoint import load_checkpoint
from scaletrain.train.stopping import EXIT_STOPPED


def checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(p.stem.removeprefix("ckpt-step")) for p in run.glob("ckpt-step*.pt"))


def _stopped_and_resumed(class_overrides, mode: list[str], signal: dict, epochs: int = 3):
    """Runs: `full` (epochs at once), `stopped` (the signal), `resumed` (--resume to the end)."""
    full = class_overrides("full", *mode, f"train.epochs={epochs}")
    part = class_overrides("part", *mode, f"train.epochs={epochs}")
    return [
        {"name": "full", "overrides": full},
        {"name": "stopped", "overrides": part, "signal": signal},
        {"name": "resumed", "overrides": part, "resume": True},
    ]


def _stopped_at_then_resumed_exactly(results, checksums, step: int, by: str) -> None:
    """Both processes stopped after `step`, whose checkpoint was written; the resumed run
    ended with the weights and best epoch of the uninterrupted one."""
    stopped = results["stopped"]
    assert stopped["steps"] == step and by in stopped["stopped"]
    assert [c["stopped:step"] for c in checksums] == [step, step]
    assert stopped["checkpoint"] == f"ckpt-step{step:08d}.pt"
    assert results["resumed"]["steps"] == results["full"]["steps"] > step
    assert results["resumed"]["stopped"] is None
    assert results["resumed"]["best"] == results["full"]["best"]
    for rank in (0, 1):
        assert checksums[rank]["resumed"] == checksums[rank]["full"], rank


@pytest.mark.mpi
@pytest.mark.timeout(200)
@pytest.mark.parametrize("mode", ["allreduce", "pipeline"])
def test_the_ranks_of_one_model_stop_together_when_one_is_signalled(
    class_overrides, tmp_path, mode
):
    """Rank 1 alone gets the signal after step 60: both ranks stop after step 61 (the vote
    is one step late), rank 0 writes that step's checkpoint mid-epoch (with the pipeline:
    gathered from both stages), and --resume ends with the weights of an uninterrupted run
    on both ranks."""
    runs = _stopped_and_resumed(class_overrides, [f"parallel.mode={mode}"], {"rank": 1, "step": 60})
    results, checksums, proc = run_driver(2, runs, tmp_path / "job", timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _stopped_at_then_resumed_exactly(results, checksums, 61, by="another rank")


@pytest.mark.mpi
@pytest.mark.timeout(200)
@pytest.mark.parametrize("mode", ["downpour", "gem"])
def test_a_signalled_worker_stops_its_parameter_server_with_a_checkpoint(
    class_overrides, tmp_path, mode
):
    """1 master + 1 worker waiting for each reply (deterministic), SGD with momentum (the
    worker's in a file of its own): the worker, signalled after step 130 (of 93 per epoch),
    stops there; the master saves the central model and its rule's state at that step;
    --resume ends like an uninterrupted run."""
    common = [f"parallel.mode={mode}", "parallel.overlap=false"]
    runs = _stopped_and_resumed(class_overrides, common, {"rank": 1, "step": 130})
    results, checksums, proc = run_driver(2, runs, tmp_path / "job", timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _stopped_at_then_resumed_exactly(results, checksums, 130, by="workers")


KILLING_MPIEXEC = """\
import os, signal, subprocess, sys
job = subprocess.Popen([{real!r}, *sys.argv[1:]], start_new_session=True)
def abort(signum, frame):  # as Open MPI's mpirun does, without its few seconds' grace
    os.killpg(job.pid, signal.SIGKILL)
    sys.exit(1)
signal.signal(signal.SIGTERM, abort)
sys.exit(job.wait())
"""


@pytest.mark.mpi
@pytest.mark.timeout(200)
@pytest.mark.parametrize("to", ["launcher", "group", "kill"])
def test_sigterm_to_scaletrain_np_stops_the_job_with_a_checkpoint_and_code_75(
    class_overrides, tmp_path, to
):
    """`scaletrain train --np 2` passes SIGTERM on to its processes: the job ends with exit
    code 75 and a checkpoint, and --resume continues from it. `group`: SIGTERM to the
    launcher's whole process group (as `timeout` and Ctrl-C send it), with an mpiexec that
    kills its processes at once on SIGTERM: the signal must not reach that mpiexec. `kill`:
    SIGKILL to the launcher; its mpiexec gets SIGTERM and passes it on (MPICH's does)."""
    env = clean_env()
    if to == "group":
        fake = tmp_path / "mpiexec"
        fake.write_text(f"#!{sys.executable}\n" + KILLING_MPIEXEC.format(real=find_mpiexec()))
        fake.chmod(0o755)
        env["SCALETRAIN_MPIEXEC"] = str(fake)
    config = tmp_path / "stop.yaml"
    run = tmp_path / "stop"
    save_config(load_config(None, class_overrides("stop", "train.epochs=200")), config)
    command = [sys.executable, "-m", "scaletrain", "train", str(config), "--mode", "allreduce"]
    job = subprocess.Popen(
        [*command, "--np", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, start_new_session=True,
    )  # fmt: skip
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while '"kind": "epoch"' not in (metrics.read_text() if metrics.exists() else ""):
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.2)  # until the first epoch has ended
    if to == "group":
        os.killpg(job.pid, signal.SIGTERM)
    else:
        job.send_signal(signal.SIGKILL if to == "kill" else signal.SIGTERM)
    out, err = job.communicate(timeout=120)  # (the processes hold its pipes to the end)
    assert job.returncode == (-signal.SIGKILL if to == "kill" else EXIT_STOPPED), err[-3000:]
    assert out.count("stopped by SIGTERM") == 1, out
    stopped_at = checkpoint_steps(run)[-1]
    assert f"after step {stopped_at} " in out and f"{run}/ckpt-step" in out and "--resume" in out
    epochs = load_checkpoint(run)["epoch"]
    assert 1 <= epochs < 200
    again = subprocess.run(
        [*command, "--np", "2", "--resume", "--epochs", str(epochs + 1)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"trained {epochs + 1} epochs" in again.stdout
    # (a stop after an epoch's last step leaves its end to the resumed run: the same step)
    assert checkpoint_steps(run)[-1] >= stopped_at
    assert load_checkpoint(run)["epoch"] == epochs + 1


@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_resumed_workers_go_on_with_their_own_random_streams(class_overrides, tmp_path):
    """1 master + 2 workers: each worker keeps its optimizer and random state in a file of its
    own, so after --resume the two draw different streams (as before the stop), not the
    master's one."""
    common = class_overrides("run", "parallel.mode=downpour", "train.epochs=1")
    runs = [
        {"name": "part", "overrides": common},
        {"name": "resumed", "overrides": [*common, "train.epochs=2"], "resume": True},
    ]
    _, checksums, proc = run_driver(3, runs, tmp_path / "job", timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "run" / "ranks").iterdir()) == [
        "rank1.pt",
        "rank2.pt",
    ]
    assert checksums[1]["part:rng"] != checksums[2]["part:rng"]
    assert checksums[1]["resumed:rng"] != checksums[2]["resumed:rng"]


@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_resumed_sub_masters_go_on_with_their_own_gem_state(class_overrides, tmp_path):
    """GEM with a top master (rank 0) and 2 sub-masters (1, 2; workers 3 and 4): each
    sub-master keeps its workers' proxies in its own file and starts the resumed run with
    them (the top master adds its sub-masters' changes as downpour does: no proxies)."""
    common = class_overrides("run", "parallel.mode=gem", "parallel.masters=2", "train.epochs=1")
    runs = [
        {"name": "part", "overrides": common},
        {"name": "resumed", "overrides": [*common, "train.epochs=2"], "resume": True},
    ]
    _, checksums, proc = run_driver(5, runs, tmp_path / "job", timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [c["part:proxies"] for c in checksums] == [[]] * 5
    assert [c["resumed:proxies"] for c in checksums] == [[], [3], [4], [], []]


@pytest.mark.mpi
@pytest.mark.timeout(200)
@pytest.mark.parametrize("signalled", ["worker", "master"])
def test_one_signalled_process_stops_every_worker_of_a_parameter_server(
    class_overrides, tmp_path, signalled
):
    """1 master + 2 workers (46 steps per epoch each, 6 epochs), one process signalled:
    worker 1 after its step 60, or the master after epoch 1's checkpoint. The master tells
    the other workers, which stop before the end wherever they are (asynchronous: under load
    one can lag far behind), the master saves the step all have reached, and --resume
    trains to the end."""
    signal = {"rank": 1, "step": 60} if signalled == "worker" else {"rank": 0, "epoch": 1}
    runs = _stopped_and_resumed(class_overrides, ["parallel.mode=downpour"], signal, epochs=6)
    results, checksums, proc = run_driver(3, runs, tmp_path / "job", timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stopped = results["stopped"]
    assert stopped["stopped"] == ("a signal to the workers" if signalled == "worker" else "SIGUSR1")
    worker_steps = [checksums[r]["stopped:step"] for r in (1, 2)]
    assert all(s < 6 * 46 for s in worker_steps), worker_steps  # told to stop
    if signalled == "worker":
        assert worker_steps[0] == 60
    else:  # (epoch 1 ends when both have done its 46 steps)
        assert all(s >= 46 for s in worker_steps), worker_steps
    assert stopped["steps"] == min(worker_steps)
    assert stopped["checkpoint"] == f"ckpt-step{min(worker_steps):08d}.pt"
    assert results["resumed"]["steps"] == results["full"]["steps"] == 6 * 46
    assert [checksums[r]["resumed:step"] for r in (1, 2)] == [6 * 46] * 2
