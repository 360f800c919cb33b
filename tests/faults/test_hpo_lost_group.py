"""A hyper-parameter study over MPI groups loses a group in the middle of a trial: the trial
is recorded as failed, naming the rank, and the study finishes its trials on the others."""

from __future__ import annotations

import os
import signal
import time

import pytest
import yaml
from _procs import launch, wait_until
from optuna.trial import TrialState

from scaletrain.hpo.study import load_study
from scaletrain.parallel.liveness import beat_interval

TIMEOUT_S = 4.0
pytestmark = [pytest.mark.mpi, pytest.mark.timeout(180)]


@pytest.mark.parametrize(
    ("gpus", "frozen", "leader"),
    [
        # groups of one process: ranks 1 and 2; trial 1 goes to rank 2
        (1, 2, 2),
        # groups of two all-reducing processes (1-2, 3-4): rank 4 freezes under rank 3,
        # whose all-reduce then fails the trial instead of ending the job
        (2, 4, 3),
    ],
)
def test_a_lost_group_fails_its_trial_and_the_study_goes_on(
    xor_dir, tmp_path, gpus, frozen, leader
):
    # long enough that trial 1 is training when it freezes, and that the other group is still
    # on the study's last trial when the frozen rank's partner finds it lost, up to one
    # heartbeat interval after the coordinator (a trial of 12 epochs takes 0.7 s on 2 cores)
    epochs = 60
    config = {
        "run": {"dir": str(tmp_path / "study"), "device": "cpu", "threads": 1},
        "data": {"path": str(xor_dir), "val_fraction": 0.25},
        "task": "supervised",
        "model": {"name": "mlp", "args": {"in_features": 32, "hidden": [16]}},
        "supervised": {"target": "pdg"},
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
        "train": {"epochs": epochs, "batch_size": 32, "progress": False, "log_every": 50},
        "parallel": {"timeout_s": TIMEOUT_S},
        "search": {
            "params": {"optim.lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True}},
            "objective": "val/loss",
            "trials": 4,
            "sampler": "random",
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    n = 1 + 2 * gpus  # rank 0 coordinates, then the two groups
    args = ["optimize", str(path), "--groups", "2", "--gpus-per-worker", str(gpus)]
    job = launch(tmp_path, n, [*args, "--no-progress"])
    try:
        pids = job.ranks(n)
        trial_1 = tmp_path / "study" / "trials" / "0001"
        wait_until(lambda: (trial_1 / "config.yaml").exists(), 120, "trial 1 to start")
        # a frozen process (if it died, mpiexec would end the whole job: --resume goes on)
        os.kill(pids[frozen], signal.SIGSTOP)
        t0 = time.monotonic()
        warning = f"the group led by rank {leader} lost rank {frozen}: no heartbeat"
        wait_until(lambda: warning in job.stderr, TIMEOUT_S + 15, "the coordinator's warning")
        noticed = time.monotonic() - t0
        code = job.wait(150)
    finally:
        job.kill()
    print(f"\nrank {frozen} stopped: the coordinator noticed after {noticed:.1f} s")
    err = job.stderr
    # silent for timeout_s since its last heartbeat, which came up to one interval earlier
    assert TIMEOUT_S - beat_interval(TIMEOUT_S) - 0.5 < noticed < TIMEOUT_S + 3, noticed
    study = load_study(tmp_path / "study")
    states = {t.number: t.state for t in study.trials}
    assert len(states) == 4, states  # the study finished its trials on the other group
    assert states[1] == TrialState.FAIL, states
    assert f"lost rank {frozen}: no heartbeat" in study.trials[1].user_attrs["error"]
    assert [s for n, s in states.items() if n != 1] == [TrialState.COMPLETE] * 3, states
    assert (tmp_path / "study" / "best-config.yaml").is_file()
    if gpus > 1:  # the frozen rank's partner found it too, and did not end the job: the
        # other group finished the last trial after that
        partner = f"warning: rank {leader}: rank {frozen} of the all-reduce group is lost"
        assert partner in err, err[-3000:]
        assert err.index(partner) < err.index("trial 3: "), err[-3000:]
    # then the job is ended, the frozen process with it (exit 3: a group was lost)
    assert f"groups led by ranks [{leader}] did not answer; aborting the job" in err, err[-3000:]
    assert code == 3, err[-3000:]
